#include "policy.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <mutex>
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

Status Policy::CheckAdmin(const Caller& who, std::string_view what) const {
  if (who.uid == 0 || who.uid == owner_uid) return Status::OK();
  if (admin_gid) {
    if (who.gid == *admin_gid) return Status::OK();
    if (who.groups) {
      for (gid_t sg : who.groups()) {
        if (sg == *admin_gid) return Status::OK();
      }
    }
  }
  std::string msg = "uid " + std::to_string(who.uid) + " may not " + std::string(what) + ": not in admin_group";
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

namespace {
// Bounded: at most this many uids are remembered (then the map starts over).
constexpr size_t kMaxCachedUids = 4096;
std::mutex g_cache_mu;  // leaf lock
std::map<uid_t, std::string> g_names;
std::map<uid_t, std::vector<gid_t>> g_groups;
}  // namespace

Actor ActorOf(const Caller& who) { return ActorForUid(who.uid); }

Actor ActorForUid(uid_t uid) {
  Actor a;
  a.uid = uid;
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    auto it = g_names.find(uid);
    if (it != g_names.end()) {
      a.name = it->second;
      return a;
    }
  }
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* out = nullptr;
  int rc = getpwuid_r(uid, &pw, buf.data(), buf.size(), &out);
  if (rc == 0 && out != nullptr) a.name = out->pw_name;
  if (rc == 0) {  // found or definitely unknown; an error (EMFILE) is not remembered
    std::lock_guard<std::mutex> lock(g_cache_mu);
    if (g_names.size() >= kMaxCachedUids) g_names.clear();
    g_names[uid] = a.name;
  }
  return a;
}

void RememberGroups(uid_t uid, const std::vector<gid_t>& groups) {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  if (g_groups.size() >= kMaxCachedUids) g_groups.clear();
  g_groups[uid] = groups;
}

std::optional<std::vector<gid_t>> RememberedGroups(uid_t uid) {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  auto it = g_groups.find(uid);
  if (it == g_groups.end()) return std::nullopt;
  return it->second;
}

}  // namespace hookfs::fs
