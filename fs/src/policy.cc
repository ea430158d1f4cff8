#include "policy.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include <spdlog/spdlog.h>

namespace hookfs::fs {

Status Policy::Check(const Caller& who, Right right, std::string_view what) const {
  if (who.uid == 0 || who.uid == owner_uid) return Status::OK();
  std::optional<gid_t> g = right == Right::kPublish ? publish_gid : run_gid;
  if (g) {
    if (who.gid == *g) return Status::OK();
    if (who.groups) {
      for (gid_t sg : who.groups()) {
        if (sg == *g) return Status::OK();
      }
    }
  }
  std::string msg = "uid " + std::to_string(who.uid) + " may not " + std::string(what) + ": not in " +
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

Actor ActorOf(const Caller& who) {
  Actor a;
  a.uid = who.uid;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* out = nullptr;
  if (getpwuid_r(who.uid, &pw, buf.data(), buf.size(), &out) == 0 && out != nullptr) {
    a.name = out->pw_name;
  }
  return a;
}

}  // namespace hookfs::fs
