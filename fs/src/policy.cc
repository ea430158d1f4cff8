#include "policy.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include <spdlog/spdlog.h>

namespace hookfs::fs {

Status Policy::Check(fuse_req_t req, Right right, std::string_view what) const {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid == 0 || ctx->uid == owner_uid) return Status::OK();
  std::optional<gid_t> g = right == Right::kPublish ? publish_gid : run_gid;
  if (g) {
    if (ctx->gid == *g) return Status::OK();
    std::vector<gid_t> groups(64);
    int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
    if (n > static_cast<int>(groups.size())) {
      groups.resize(n);
      n = fuse_req_getgroups(req, n, groups.data());
    }
    for (int i = 0; i < n && i < static_cast<int>(groups.size()); ++i) {
      if (groups[i] == *g) return Status::OK();
    }
  }
  std::string msg = "uid " + std::to_string(ctx->uid) + " may not " + std::string(what) + ": not in " +
                    (right == Right::kPublish ? "publish_group" : "run_group");
  spdlog::warn("EACCES: {}", msg);
  return Status::PermissionDenied(std::move(msg));
}

gid_t Policy::GroupFor(Right right) const {
  std::optional<gid_t> g = right == Right::kPublish ? publish_gid : run_gid;
  return g ? *g : owner_gid;
}

mode_t Policy::WritableDirMode(Right right) const {
  std::optional<gid_t> g = right == Right::kPublish ? publish_gid : run_gid;
  return g ? 0775 : 0755;
}

Result<gid_t> ResolveGroup(const std::string& name) {
  if (name.empty()) return Status::InvalidArgument("empty group name");
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(name.c_str(), &end, 10);
  if (*end == '\0' && errno == 0 && v < 0xffffffffUL) return static_cast<gid_t>(v);
  std::vector<char> buf(16384);
  group gr{};
  group* out = nullptr;
  int rc = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &out);
  if (rc != 0 || out == nullptr) return Status::InvalidArgument("unknown group '" + name + "'");
  return out->gr_gid;
}

Actor ActorOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Actor a;
  a.uid = ctx->uid;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* out = nullptr;
  if (getpwuid_r(ctx->uid, &pw, buf.data(), buf.size(), &out) == 0 && out != nullptr) {
    a.name = out->pw_name;
  }
  return a;
}

}  // namespace hookfs::fs
