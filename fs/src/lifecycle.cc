#include "lifecycle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

namespace hookfs::fs {

Status RecoverStaleMount(const std::string& mnt) {
  // statfs always reaches the filesystem (stat may be answered from the
  // kernel's attribute cache even when the daemon is gone).
  struct statfs sfs{};
  struct stat st{};
  if (::statfs(mnt.c_str(), &sfs) == 0) return Status::OK();
  if (errno != ENOTCONN) return Status::OK();  // missing etc.: the mount call will say
  spdlog::warn("{}: stale mount (Transport endpoint is not connected): fusermount3 -uz", mnt);
  const char* bin = ::access("/bin/fusermount3", X_OK) == 0 ? "/bin/fusermount3" : "/usr/bin/fusermount3";
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork");
  if (pid == 0) {
    ::execl(bin, "fusermount3", "-uz", mnt.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::IOError(mnt + ": fusermount3 -uz failed (status " + std::to_string(status) + ")");
  }
  if (::stat(mnt.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + mnt + " after unmount");
  spdlog::info("{}: stale mount cleared", mnt);
  return Status::OK();
}

namespace {
// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t j = 1; j <= 3; ++j) {
        if (s[i + j] < '0' || s[i + j] > '7') { ok = false; break; }
        v = v * 8 + (s[i + j] - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}
}  // namespace

std::optional<std::string> MountDevice(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, dev, root, point;
    if (!(ls >> id >> parent >> dev >> root >> point)) continue;
    if (Unescape(point) == mnt) found = dev;  // the last one is on top
  }
  if (found.empty()) return std::nullopt;
  return found;
}

void SetReadAhead(const std::string& dev, unsigned kb) {
  std::string path = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    spdlog::debug("{}: {} (readahead stays at the default)", path, std::strerror(errno));
    return;
  }
  std::string v = std::to_string(kb) + "\n";
  if (::write(fd, v.data(), v.size()) != static_cast<ssize_t>(v.size())) {
    spdlog::debug("{}: {}", path, std::strerror(errno));
  } else {
    spdlog::debug("{} = {}", path, kb);
  }
  ::close(fd);
}

Result<MountOptions> ParseMountOptions(const std::vector<std::string>& lists) {
  MountOptions mo;
  for (const std::string& list : lists) {
    std::stringstream ss(list);
    std::string opt;
    while (std::getline(ss, opt, ',')) {
      if (opt.empty()) continue;
      if (opt == "allow_other") {
        mo.allow_other = true;
      } else if (opt.rfind("publish_group=", 0) == 0) {
        mo.publish_group = opt.substr(14);
      } else if (opt.rfind("run_group=", 0) == 0) {
        mo.run_group = opt.substr(10);
      } else if (opt == "default_permissions") {
        // always on
      } else if (opt == "ro") {
        return Status::InvalidArgument("-o ro is not supported: incoming/, live, tags and runs are written through the mount");
      } else if (opt == "rw") {
        // the default
      } else if (opt == "suid" || opt == "dev") {
        return Status::InvalidArgument("-o " + opt + " is not supported: the mount is always nosuid,nodev");
      } else {
        mo.fuse.push_back(opt);
      }
    }
  }
  return mo;
}

}  // namespace hookfs::fs
