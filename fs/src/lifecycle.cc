#include "lifecycle.h"
#include "log_safe.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#ifdef HOOKFS_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

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

Result<uint32_t> ParseKeep(std::string_view value) {
  std::string v(value);
  char* end = nullptr;
  errno = 0;
  unsigned long n = std::strtoul(v.c_str(), &end, 10);
  if (v.empty() || v[0] == '-' || *end != '\0' || errno != 0 || n < 1 || n > 1000000) {
    return Status::InvalidArgument("keep must be 1..1000000, not '" + v + "'");
  }
  return static_cast<uint32_t>(n);
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
      } else if (auto eq = opt.find('='); eq != std::string::npos &&
                 (opt.compare(0, eq, "max_packs_per_user") == 0 || opt.compare(0, eq, "pack_idle_timeout") == 0 ||
                  opt.compare(0, eq, "max_temp_links_per_user") == 0 || opt.compare(0, eq, "temp_link_ttl") == 0)) {
        std::string key = opt.substr(0, eq), val = opt.substr(eq + 1);
        unsigned long v = 0;
        auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), v);
        if (ec != std::errc() || p != val.data() + val.size() || v == 0 || v > 1000000) {
          return Status::InvalidArgument("-o " + opt + ": a number from 1 to 1000000");
        }
        if (key == "max_packs_per_user") mo.max_packs_per_user = v;
        else if (key == "pack_idle_timeout") mo.pack_idle_timeout = static_cast<unsigned>(v);
        else if (key == "max_temp_links_per_user") mo.max_temp_links_per_user = v;
        else mo.temp_link_ttl = static_cast<unsigned>(v);
      } else if (opt.rfind("keep=", 0) == 0) {
        HOOKFS_ASSIGN_OR_RETURN(uint32_t k, ParseKeep(opt.substr(5)));
        mo.keep = k;
      } else if (opt == "require_signed") {
        mo.require_signed = true;
      } else if (opt.rfind("admin_group=", 0) == 0) {
        mo.admin_group = opt.substr(12);
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

namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::optional<bool> ParseBool(std::string_view v) {
  if (v == "yes" || v == "true" || v == "on" || v == "1") return true;
  if (v == "no" || v == "false" || v == "off" || v == "0") return false;
  return std::nullopt;
}

}  // namespace

Result<ServiceConfig> ParseConfig(std::string_view text, const std::string& origin) {
  ServiceConfig c;
  std::vector<std::string> seen;
  size_t lineno = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++lineno;
    line = Trim(line);
    if (line.empty() || line.front() == '#') continue;
    std::string where = origin + ":" + std::to_string(lineno) + ": ";
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) return Status::InvalidArgument(where + "expected 'key = value'");
    std::string key(Trim(line.substr(0, eq)));
    std::string value(Trim(line.substr(eq + 1)));
    for (const std::string& k : seen) {
      if (k == key) return Status::InvalidArgument(where + "'" + key + "' is set twice");
    }
    seen.push_back(key);
    if (key == "store" || key == "mountpoint") {
      if (value.empty() || value.front() != '/') {
        return Status::InvalidArgument(where + key + " must be an absolute path, not '" + value + "'");
      }
      (key == "store" ? c.store : c.mountpoint) = value;
    } else if (key == "publish_group" || key == "run_group") {
      // Empty: no group (only root may do that).
      if (!value.empty()) (key == "publish_group" ? c.publish_group : c.run_group) = value;
    } else if (key == "log_level") {
      static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
      bool ok = false;
      for (const char* l : kLevels) ok = ok || value == l;
      if (!ok) {
        return Status::InvalidArgument(where + "log_level must be trace, debug, info, warn, error, "
                                       "critical or off, not '" + value + "'");
      }
      c.log_level = value;
    } else if (key == "allow_other") {
      auto b = ParseBool(value);
      if (!b) return Status::InvalidArgument(where + "allow_other must be yes or no, not '" + value + "'");
      c.allow_other = *b;
    } else if (key == "threads") {
      char* end = nullptr;
      errno = 0;
      unsigned long v = std::strtoul(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || errno != 0 || v < 1 || v > 64) {
        return Status::InvalidArgument(where + "threads must be 1..64, not '" + value + "'");
      }
      c.threads = static_cast<unsigned>(v);
    } else if (key == "keep") {
      auto k = ParseKeep(value);
      if (!k.ok()) return Status::InvalidArgument(where + k.status().message());
      c.keep = *k;
    } else if (key == "require_signed") {
      auto b = ParseBool(value);
      if (!b) return Status::InvalidArgument(where + "require_signed must be yes or no, not '" + value + "'");
      c.require_signed = *b;
    } else if (key == "admin_group") {
      if (!value.empty()) c.admin_group = value;
    } else if (key == "host") {
      if (value.empty()) return Status::InvalidArgument(where + "host must not be empty");
      c.host = value;
    } else {
      return Status::InvalidArgument(where + "unknown key '" + key +
                                     "' (store, mountpoint, publish_group, run_group, admin_group, "
                                     "log_level, allow_other, threads, keep, require_signed, host)");
    }
  }
  return c;
}

Result<ServiceConfig> ReadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::FromErrno(errno, "config " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::IOError("config " + path + ": read error");
  return ParseConfig(ss.str(), path);
}

bool StderrIsJournal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js || !*js) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st{};
  if (::fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

namespace {
// "%*": the sd-daemon(3) priority prefix of the message's level.
class SdPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const char* p = "<6>";
    switch (msg.level) {
      case spdlog::level::critical: p = "<2>"; break;
      case spdlog::level::err: p = "<3>"; break;
      case spdlog::level::warn: p = "<4>"; break;
      case spdlog::level::info: p = "<6>"; break;
      case spdlog::level::debug: case spdlog::level::trace: p = "<7>"; break;
      default: break;
    }
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<SdPriority>(); }
};
// "%~": the message with control characters escaped (LogSafe): a user-chosen
// name can never start a line of its own (issue 9.6).
class SafePayload final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    std::string safe = LogSafe(std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(safe.data(), safe.data() + safe.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<SafePayload>(); }
};
}  // namespace

void SetupLogging(bool journal) {
  std::shared_ptr<spdlog::logger> logger;
  if (journal) {
    logger = std::make_shared<spdlog::logger>("hookfs", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<SdPriority>('*').add_flag<SafePayload>('~').set_pattern("%*%~");
    logger->set_formatter(std::move(f));
  } else {
    logger = std::make_shared<spdlog::logger>("hookfs",
                                              std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<SafePayload>('~').set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %~");
    logger->set_formatter(std::move(f));
  }
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
}

void Notify(const std::string& state) {
#ifdef HOOKFS_HAVE_SYSTEMD
  int rc = sd_notify(0, state.c_str());
  if (rc < 0) spdlog::warn("sd_notify: {}", std::strerror(-rc));
#else
  if (const char* s = std::getenv("NOTIFY_SOCKET"); s && *s) {
    spdlog::warn("NOTIFY_SOCKET is set but hookfs was built without libsystemd: not sent: {}", state);
  }
#endif
}

bool WaitUntilServing(const std::string& mnt) {
  constexpr long kFuseSuperMagic = 0x65735546;
  for (;;) {
    struct statfs sfs{};
    if (::statfs(mnt.c_str(), &sfs) == 0) return static_cast<long>(sfs.f_type) == kFuseSuperMagic;
    if (errno != EINTR) return false;
  }
}

}  // namespace hookfs::fs
