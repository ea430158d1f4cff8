// hookfs as a systemd service (docs/service.md): the unit files and their
// install, the daemon started with the unit's exact ExecStart= line under a
// NOTIFY_SOCKET the test listens on, the configuration file, and the
// permission model of DESIGN.md §4 as the configuration sets it up, with real
// users. systemd is not PID 1 here: the test plays its part (notify socket,
// JOURNAL_STREAM, NoNewPrivileges= and CapabilityBoundingSet= via setpriv).
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "lifecycle.h"
#include "mount_fixture.h"

namespace hookfs::mount_test {
namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::string kSrc = HOOKFS_SOURCE_DIR;

std::vector<std::string> Split(const std::string& s, char sep = ' ') {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string w;
  while (std::getline(ss, w, sep)) {
    if (!w.empty()) out.push_back(w);
  }
  return out;
}

// key=value lines of a unit file, in order (comments and sections skipped).
std::vector<std::pair<std::string, std::string>> UnitDirectives(const std::string& path) {
  std::vector<std::pair<std::string, std::string>> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line[0] == ';' || line[0] == '[') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    out.emplace_back(line.substr(0, eq), line.substr(eq + 1));
  }
  return out;
}

std::string Directive(const std::string& unit, const std::string& key) {
  std::string v;
  for (auto& [k, val] : UnitDirectives(unit)) {
    if (k == key) v = val;
  }
  return v;
}

bool Contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string MountOptionsOf(const std::string& mnt) {
  std::ifstream in("/proc/mounts");
  std::string dev, point, type, opts, rest, found;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    if (ls >> dev >> point >> type >> opts && point == mnt) found = opts;
  }
  return found;
}

// ---- the files ------------------------------------------------------------------------

// A staged `cmake --install --prefix /usr` (what a Debian package does).
class StagedInstall : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hookfs-stage-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dest_ = tmpl;
    Cmd c = Sh("DESTDIR=" + Q(dest_) + " " + Q(HOOKFS_CMAKE) + " --install " + Q(HOOKFS_BUILD_DIR) +
               " --prefix /usr");
    ASSERT_TRUE(c.ok()) << c.out << c.err;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dest_.empty()) stdfs::remove_all(dest_, ec);
  }
  std::string dest_;
};

TEST_F(StagedInstall, PutsEverythingWhereDebianExpectsIt) {
  for (const char* f : {"/usr/bin/hookfs", "/usr/bin/hookctl"}) {
    EXPECT_EQ(::access((dest_ + f).c_str(), X_OK), 0) << f;
  }
  for (const char* f : {"/usr/lib/systemd/system/hookfs.service", "/usr/lib/systemd/system/hookfs@.service",
                        "/usr/lib/sysusers.d/hookfs.conf", "/usr/lib/tmpfiles.d/hookfs.conf",
                        "/etc/hookfs/hookfs.conf", "/usr/share/man/man8/hookfs.8",
                        "/usr/share/man/man1/hookctl.1"}) {
    EXPECT_TRUE(stdfs::is_regular_file(dest_ + f)) << f;
  }
  // With prefix /usr the installed units are the sources, byte for byte.
  EXPECT_EQ(ReadAll(dest_ + "/usr/lib/systemd/system/hookfs.service"), ReadAll(kSrc + "/systemd/hookfs.service"));
  EXPECT_EQ(Directive(dest_ + "/usr/lib/systemd/system/hookfs.service", "ExecStart"),
            "/usr/bin/hookfs -f --config /etc/hookfs/hookfs.conf");
  EXPECT_EQ(Directive(dest_ + "/usr/lib/systemd/system/hookfs@.service", "ExecStart"),
            "/usr/bin/hookfs -f --config /etc/hookfs/%i.conf");
  // The man pages render without warnings.
  for (const char* m : {"/usr/share/man/man8/hookfs.8", "/usr/share/man/man1/hookctl.1"}) {
    Cmd c = Sh("MANWIDTH=80 man --warnings -l " + Q(dest_ + m) + " >/dev/null");
    EXPECT_TRUE(c.ok()) << m << ": " << c.err;
    EXPECT_EQ(c.err, "") << m;
  }
}

TEST_F(StagedInstall, UnitsPassSystemdAnalyzeVerify) {
  ASSERT_EQ(Sh("command -v systemd-analyze").status, 0)
      << "systemd-analyze is missing: apt-get install systemd (scripts/deps.sh)";
  // verify checks that ExecStart's binary exists and that Documentation=
  // man pages open: point both at the staged install.
  std::string dir = dest_ + "/verify";
  stdfs::create_directories(dir);
  for (const char* u : {"hookfs.service", "hookfs@.service"}) {
    std::string text = ReadAll(dest_ + "/usr/lib/systemd/system/" + u);
    std::string bin = dest_ + "/usr/bin/hookfs";
    for (size_t p = 0; (p = text.find("=/usr/bin/hookfs ", p)) != std::string::npos; p += bin.size()) {
      text.replace(p + 1, std::strlen("/usr/bin/hookfs"), bin);
    }
    EXPECT_TRUE(Contains(text, "ExecStart=" + bin + " -f --config ")) << text;
    WriteAll(dir + "/" + u, text);
  }
  stdfs::copy_file(dir + "/hookfs@.service", dir + "/hookfs@demo.service");
  Cmd c = Sh("cd " + Q(dir) + " && MANPATH=" + Q(dest_ + "/usr/share/man") +
             " systemd-analyze verify ./hookfs.service ./hookfs@demo.service 2>&1");
  EXPECT_EQ(c.status, 0) << c.out;
  EXPECT_EQ(c.out, "") << "systemd-analyze verify printed warnings";
}

TEST_F(StagedInstall, SysusersAndTmpfilesMakeGroupsAndDirectories) {
  ASSERT_EQ(Sh("command -v systemd-sysusers && command -v systemd-tmpfiles").status, 0)
      << "apt-get install systemd";
  std::string root = dest_ + "/root";
  stdfs::create_directories(root + "/etc");
  Cmd su = Sh("systemd-sysusers --root=" + Q(root) + " " + Q(dest_ + "/usr/lib/sysusers.d/hookfs.conf"));
  ASSERT_TRUE(su.ok()) << su.err;
  std::string groups = ReadAll(root + "/etc/group");
  Cmd tf = Sh("systemd-tmpfiles --root=" + Q(root) + " --create " + Q(dest_ + "/usr/lib/tmpfiles.d/hookfs.conf"));
  ASSERT_TRUE(tf.ok()) << tf.err;
  struct stat st{};
  ASSERT_EQ(::stat((root + "/var/lib/hookfs").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_TRUE(S_ISDIR(st.st_mode));

  // The example configuration names exactly these groups and directories,
  // and the daemon accepts it.
  auto cfg = hookfs::fs::ParseConfig(ReadAll(dest_ + "/etc/hookfs/hookfs.conf"), "hookfs.conf");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  ASSERT_TRUE(cfg->publish_group && cfg->run_group && cfg->mountpoint && cfg->store);
  EXPECT_TRUE(Contains(groups, *cfg->publish_group + ":x:")) << groups;
  EXPECT_TRUE(Contains(groups, *cfg->run_group + ":x:")) << groups;
  EXPECT_EQ(*cfg->store, "/var/lib/hookfs");
  ASSERT_EQ(::stat((root + *cfg->mountpoint).c_str(), &st), 0) << *cfg->mountpoint;
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(cfg->allow_other, true);
}

TEST(ServiceUnits, NoDirectiveCreatesAMountNamespace) {
  // The FUSE mount must be made in the host's mount namespace (NOTES.md).
  const std::vector<std::string> forbidden = {
      "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
      "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
      "ProtectProc", "ProcSubset", "ProtectHostname", "PrivateUsers", "PrivateNetwork", "PrivateIPC",
      "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "TemporaryFileSystem",
      "BindPaths", "BindReadOnlyPaths", "RootDirectory", "RootImage", "MountAPIVFS", "DynamicUser",
      "NetworkNamespacePath", "IPCNamespacePath", "MountFlags", "LogNamespace"};
  for (const char* u : {"hookfs.service", "hookfs@.service"}) {
    auto ds = UnitDirectives(kSrc + "/systemd/" + u);
    ASSERT_FALSE(ds.empty()) << u;
    for (auto& [k, v] : ds) {
      EXPECT_EQ(std::count(forbidden.begin(), forbidden.end(), k), 0) << u << ": " << k << "=" << v;
    }
    std::string unit = kSrc + "/systemd/" + u;
    EXPECT_EQ(Directive(unit, "Type"), "notify") << u;
    EXPECT_EQ(Directive(unit, "NotifyAccess"), "main") << u;
    EXPECT_EQ(Directive(unit, "Restart"), "on-failure") << u;
    EXPECT_TRUE(Contains(Directive(unit, "DeviceAllow"), "/dev/fuse")) << u;
  }
}

// ---- the configuration file -------------------------------------------------------------

TEST(ConfigFile, ParsesEveryKey) {
  auto c = hookfs::fs::ParseConfig(
      "# comment\n\n  store = /srv/s  \nmountpoint=/m\npublish_group = pub\nrun_group =\n"
      "allow_other = yes\nlog_level = debug\nthreads = 3\n",
      "t.conf");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->store, "/srv/s");
  EXPECT_EQ(c->mountpoint, "/m");
  EXPECT_EQ(c->publish_group, "pub");
  EXPECT_FALSE(c->run_group.has_value());
  EXPECT_EQ(c->allow_other, true);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->threads, 3u);
}

TEST(ConfigFile, RejectsWithFileAndLine) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"store = /a\nbogus = 1\n", "t.conf:2: unknown key 'bogus'"},
      {"store = relative\n", "t.conf:1: store must be an absolute path"},
      {"threads = 0\n", "t.conf:1: threads must be 1..64"},
      {"threads = 65\n", "t.conf:1: threads must be 1..64"},
      {"allow_other = maybe\n", "t.conf:1: allow_other must be yes or no"},
      {"log_level = loud\n", "t.conf:1: log_level must be"},
      {"# x\nstore\n", "t.conf:2: expected 'key = value'"},
      {"threads = 2\nthreads = 3\n", "t.conf:2: 'threads' is set twice"},
  };
  for (const Case& c : cases) {
    auto r = hookfs::fs::ParseConfig(c.text, "t.conf");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_TRUE(Contains(r.status().message(), c.message)) << r.status().message();
  }
}

// ---- the daemon as the unit starts it ------------------------------------------------------

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/fuse", F_OK) != 0) {
      GTEST_SKIP() << "/dev/fuse is missing: the service tests need FUSE";
    }
    ASSERT_EQ(::geteuid(), 0u) << "the service tests need root (the unit runs hookfs as root)";
    char tmpl[] = "/tmp/hookfs-svc-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    ::chmod(base_.c_str(), 0755);  // other users read packs and walk to the mount
    store_ = base_ + "/store";
    mnt_ = base_ + "/mnt";
    conf_ = base_ + "/hookfs.conf";
    log_ = base_ + "/daemon.log";
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);

    // The notify socket systemd would listen on.
    sock_path_ = base_ + "/notify.sock";
    sock_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(sock_, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    ASSERT_LT(sock_path_.size(), sizeof(sa.sun_path));
    std::strcpy(sa.sun_path, sock_path_.c_str());
    ASSERT_EQ(::bind(sock_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0) << std::strerror(errno);

    // The unit's ExecStart=, word by word.
    exec_ = Split(Directive(kSrc + "/systemd/hookfs.service", "ExecStart"));
    ASSERT_EQ(exec_.size(), 4u);
    ASSERT_EQ(exec_[0], "/usr/bin/hookfs");
    ASSERT_EQ(exec_[3], "/etc/hookfs/hookfs.conf");
  }

  void TearDown() override {
    if (base_.empty()) return;
    Kill(SIGTERM);
    for (const std::string& m : mounts_) {
      if (IsMounted(m)) Sh("/bin/fusermount3 -uz " + Q(m));
    }
    if (sock_ >= 0) ::close(sock_);
    if (HasFailure()) std::cerr << "---- daemon log (" << log_ << ") ----\n" << ReadAll(log_) << "----\n";
    bool clean = true;
    for (const std::string& m : mounts_) clean = clean && !IsMounted(m);
    if (clean) {
      std::error_code ec;
      stdfs::remove_all(base_, ec);
    }
  }

  void WriteConfig(const std::string& extra, bool with_paths = true) {
    std::string text = "# test configuration\n";
    if (with_paths) text += "store = " + store_ + "\nmountpoint = " + mnt_ + "\n";
    WriteAll(conf_, text + extra);
  }

  // The unit's ExecStart= line with /usr/bin/hookfs -> the build and the
  // configuration -> conf_, plus `extra` words; under setpriv with the unit's
  // NoNewPrivileges= and CapabilityBoundingSet=. stderr is a file that
  // JOURNAL_STREAM names, as with StandardError=journal.
  void Start(const std::vector<std::string>& extra = {}) {
    ASSERT_EQ(daemon_, -1) << "already running";
    std::vector<std::string> args = exec_;
    args[0] = HOOKFS_BIN;
    args[3] = conf_;
    args.insert(args.end(), extra.begin(), extra.end());
    std::string unit = kSrc + "/systemd/" + unit_;
    std::vector<std::string> wrapped;
    if (Sh("command -v setpriv").ok()) {
      wrapped = {"/usr/bin/setpriv"};
      if (Directive(unit, "NoNewPrivileges") == "yes") wrapped.push_back("--no-new-privs");
      std::string caps = "-all";
      for (std::string c : Split(Directive(unit, "CapabilityBoundingSet"))) {
        std::transform(c.begin(), c.end(), c.begin(), ::tolower);
        caps += ",+" + c.substr(4);  // cap_sys_admin -> sys_admin
      }
      wrapped.push_back("--bounding-set");
      wrapped.push_back(caps);
      wrapped.push_back("--inh-caps");
      wrapped.push_back("-all");
    }
    wrapped.insert(wrapped.end(), args.begin(), args.end());
    notes_.clear();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 2);
      ::dup2(fd, 1);
      struct stat st{};
      ::fstat(2, &st);
      std::string js = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
      ::setenv("JOURNAL_STREAM", js.c_str(), 1);
      ::setenv("NOTIFY_SOCKET", sock_path_.c_str(), 1);
      if (std::string um = Directive(unit, "UMask"); !um.empty()) ::umask(std::stoi(um, nullptr, 8));
      for (auto& [k, v] : env_) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : wrapped) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    daemon_ = pid;
  }

  // Collects notifications until one contains `what`; false on timeout or
  // when the daemon exits first.
  bool WaitNotify(const std::string& what, int seconds = 20) {
    auto deadline = Clock::now() + std::chrono::seconds(seconds);
    for (;;) {
      for (const std::string& n : notes_) {
        if (Contains(n, what)) return true;
      }
      if (Clock::now() > deadline) return false;
      pollfd p{sock_, POLLIN, 0};
      if (::poll(&p, 1, 50) == 1) {
        char buf[4096];
        ssize_t n = ::recv(sock_, buf, sizeof(buf), 0);
        if (n > 0) notes_.emplace_back(buf, static_cast<size_t>(n));
        continue;
      }
      int status;
      if (daemon_ > 0 && ::waitpid(daemon_, &status, WNOHANG) == daemon_) {
        daemon_ = -1;
        exit_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        // Drain what it sent before exiting.
        char buf[4096];
        ssize_t n;
        while ((n = ::recv(sock_, buf, sizeof(buf), MSG_DONTWAIT)) > 0) notes_.emplace_back(buf, n);
        for (const std::string& m : notes_) {
          if (Contains(m, what)) return true;
        }
        return false;
      }
    }
  }

  void StartReady(const std::vector<std::string>& extra = {}) {
    ASSERT_NO_FATAL_FAILURE(Start(extra));
    ASSERT_TRUE(WaitNotify("READY=1")) << "no READY=1; exit " << exit_ << "; log:\n" << ReadAll(log_);
  }

  // Sends `sig`, waits (10 s, then SIGKILL); returns the exit status.
  int Kill(int sig) {
    if (daemon_ <= 0) return exit_;
    ::kill(daemon_, sig);
    int status = 0;
    bool exited = false;
    for (auto deadline = Clock::now() + std::chrono::seconds(10); Clock::now() < deadline;) {
      if (::waitpid(daemon_, &status, WNOHANG) == daemon_) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!exited) {
      // Where it hangs (gdb is optional: not in scripts/deps.sh).
      std::cerr << "hookfs did not exit 10 s after signal " << sig << "; its threads:\n"
                << Sh("command -v gdb >/dev/null && gdb -batch -p " + std::to_string(daemon_) +
                      " -ex 'thread apply all bt' 2>&1").out;
      ::kill(daemon_, SIGKILL);
      ::waitpid(daemon_, &status, 0);
    }
    daemon_ = -1;
    exit_ = !exited ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_;
  }

  // The notifications so far, drained from the socket.
  std::string Notes() {
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(sock_, buf, sizeof(buf), MSG_DONTWAIT)) > 0) notes_.emplace_back(buf, n);
    std::string all;
    for (auto& s : notes_) all += s + "\n--\n";
    return all;
  }

  std::string Pack(const std::string& hook, const std::string& content, const std::string& extra = "") {
    std::string dir = base_ + "/src-" + std::to_string(++packs_);
    stdfs::create_directories(dir);
    WriteAll(dir + "/version", content);
    std::string out = base_ + "/pack" + std::to_string(packs_) + ".pack";
    Cmd c = Sh(std::string(HOOKCTL_BIN) + " pack --hook " + Q(hook) + " " + extra + " -o " + Q(out) + " " + Q(dir));
    EXPECT_TRUE(c.ok()) << c.err;
    ::chmod(out.c_str(), 0644);
    return out;
  }

  std::string Hook(const std::string& h, const std::string& mnt = "") const {
    return (mnt.empty() ? mnt_ : mnt) + "/hooks/" + h;
  }

  std::string unit_ = "hookfs.service";
  std::map<std::string, std::string> env_;  // the unit's Environment=, substituted
  std::string base_, store_, mnt_, conf_, log_, sock_path_;
  std::vector<std::string> exec_, notes_;
  std::vector<std::string> mounts_{};  // every mountpoint a test used (teardown unmounts)
  int sock_ = -1;
  pid_t daemon_ = -1;
  int exit_ = -1;
  int packs_ = 0;
};

TEST_F(ServiceTest, ReadyServesStatusStoppingAndCleanExit) {
  mounts_ = {mnt_};
  WriteConfig("log_level = info\n");
  ASSERT_NO_FATAL_FAILURE(StartReady());
  // The mount answers right after READY=1: no polling, no retry.
  struct statfs sfs{};
  ASSERT_EQ(::statfs(mnt_.c_str(), &sfs), 0) << std::strerror(errno);
  EXPECT_EQ(static_cast<unsigned long>(sfs.f_type), 0x65735546ul);  // FUSE_SUPER_MAGIC
  Cmd ls = Sh("ls " + Q(mnt_));
  EXPECT_EQ(ls.out, "hooks\nincoming\njournal\nkeys\nobjects\n") << ls.err;
  EXPECT_TRUE(Contains(Notes(), "STATUS=serving " + store_ + " on " + mnt_ + ": 0 hooks")) << Notes();
  // It runs with the unit's capability bounding set (setpriv above):
  // CAP_SYS_ADMIN (21) and CAP_CHOWN (0) are enough for all of this.
  if (Sh("command -v setpriv").ok()) {
    std::string status = ReadAll("/proc/" + std::to_string(daemon_) + "/status");
    EXPECT_TRUE(Contains(status, "CapBnd:\t0000000000200001\n")) << status;
    EXPECT_TRUE(Contains(status, "NoNewPrivs:\t1\n")) << status;
  }
  EXPECT_TRUE(Contains(MountOptionsOf(mnt_), "nosuid")) << MountOptionsOf(mnt_);
  EXPECT_TRUE(Contains(MountOptionsOf(mnt_), "nodev")) << MountOptionsOf(mnt_);

  // A publish updates STATUS.
  ASSERT_TRUE(Sh("cp " + Q(Pack("svc", "one\n")) + " " + Q(mnt_ + "/incoming/a.pack")).ok());
  EXPECT_TRUE(WaitNotify("1 hooks", 5)) << Notes();
  EXPECT_EQ(ReadAll(Hook("svc") + "/live/version"), "one\n");
  // A rejected pack: cp fails, the log says who and why.
  WriteAll(base_ + "/garbage.pack", "not a pack");
  EXPECT_FALSE(Sh("cp " + Q(base_ + "/garbage.pack") + " " + Q(mnt_ + "/incoming/bad.pack")).ok());

  ASSERT_EQ(Kill(SIGTERM), 0);
  EXPECT_TRUE(Contains(Notes(), "STOPPING=1")) << Notes();
  EXPECT_FALSE(IsMounted(mnt_));

  // Logs: journal priority prefixes, the publish with its uid.
  std::string log = ReadAll(log_);
  EXPECT_TRUE(Contains(log, "<6>incoming/a.pack: uid 0: svc release 1 accepted")) << log;
  EXPECT_TRUE(Contains(log, "<6>incoming/a.pack: published by uid 0")) << log;
  EXPECT_TRUE(Contains(log, "<4>incoming/bad.pack: uid 0: ")) << log;
  for (const std::string& line : Split(log, '\n')) {
    EXPECT_TRUE(line.size() > 3 && line[0] == '<' && line[2] == '>') << "no priority prefix: " << line;
  }
}

TEST_F(ServiceTest, AfterKill9StartingAgainRecoversAndServesTheSameData) {
  mounts_ = {mnt_};
  WriteConfig("");
  ASSERT_NO_FATAL_FAILURE(StartReady());
  ASSERT_TRUE(Sh("cp " + Q(Pack("crash", "kept\n")) + " " + Q(mnt_ + "/incoming/c.pack")).ok());
  ASSERT_EQ(Kill(SIGKILL), 128 + SIGKILL);
  EXPECT_TRUE(IsMounted(mnt_));
  struct statfs sfs{};
  EXPECT_EQ(::statfs(mnt_.c_str(), &sfs), -1);
  EXPECT_EQ(errno, ENOTCONN);

  // Restart=on-failure starts the same command line again.
  ASSERT_NO_FATAL_FAILURE(StartReady());
  EXPECT_EQ(ReadAll(Hook("crash") + "/live/version"), "kept\n");
  EXPECT_TRUE(Contains(ReadAll(log_), "stale mount cleared")) << ReadAll(log_);

  // Crash again; this time the unit's ExecStopPost= clears the stale mount.
  ASSERT_EQ(Kill(SIGKILL), 128 + SIGKILL);
  EXPECT_TRUE(IsMounted(mnt_));
  std::vector<std::string> post = Split(Directive(kSrc + "/systemd/hookfs.service", "ExecStopPost"));
  ASSERT_EQ(post.size(), 4u);
  ASSERT_EQ(post[0], "/usr/bin/hookfs");
  ASSERT_EQ(post[2], "/etc/hookfs/hookfs.conf");
  Cmd stop = Sh(std::string(HOOKFS_BIN) + " " + post[1] + " " + Q(conf_) + " " + post[3]);
  EXPECT_TRUE(stop.ok()) << stop.err;
  EXPECT_FALSE(IsMounted(mnt_));
  // And after a clean stop it does nothing and succeeds.
  EXPECT_TRUE(Sh(std::string(HOOKFS_BIN) + " --config " + Q(conf_) + " --unmount-stale").ok());
}

TEST_F(ServiceTest, ConfigIsHonouredAndCommandLineOverridesIt) {
  std::string made = base_ + "/made";  // missing: the daemon makes it
  std::string other_store = base_ + "/store2", other_mnt = base_ + "/mnt2";
  ASSERT_EQ(::mkdir(other_mnt.c_str(), 0755), 0);
  mounts_ = {made, other_mnt};
  WriteConfig("store = " + store_ + "\nmountpoint = " + made +
                  "\nlog_level = debug\nthreads = 3\nallow_other = yes\npublish_group = users\nrun_group = users\n",
              false);
  ASSERT_NO_FATAL_FAILURE(StartReady());
  EXPECT_TRUE(Contains(Notes(), "STATUS=serving " + store_ + " on " + made)) << Notes();
  EXPECT_TRUE(stdfs::exists(store_ + "/data.mdb"));
  std::string log = ReadAll(log_);
  EXPECT_TRUE(Contains(log, "created mountpoint " + made)) << log;
  EXPECT_TRUE(Contains(log, "3 threads")) << log;
  EXPECT_TRUE(Contains(log, "<7>")) << "log_level = debug shows debug lines:\n" << log;
  EXPECT_TRUE(Contains(MountOptionsOf(made), "allow_other")) << MountOptionsOf(made);
  EXPECT_EQ(Sh("stat -c %G " + Q(made + "/incoming")).out, "users\n");
  ASSERT_EQ(Kill(SIGTERM), 0);
  EXPECT_FALSE(IsMounted(made));

  // The command line wins: store, mountpoint, threads, log level, groups.
  ASSERT_EQ(::truncate(log_.c_str(), 0), 0);
  ASSERT_NO_FATAL_FAILURE(StartReady({"--store", other_store, "--threads", "5", "--log-level", "info", "-o",
                                      "publish_group=root", other_mnt}));
  EXPECT_TRUE(Contains(Notes(), "STATUS=serving " + other_store + " on " + other_mnt)) << Notes();
  EXPECT_FALSE(IsMounted(made));
  log = ReadAll(log_);
  EXPECT_TRUE(Contains(log, "5 threads")) << log;
  EXPECT_FALSE(Contains(log, "<7>")) << log;
  EXPECT_EQ(Sh("stat -c %G " + Q(other_mnt + "/incoming")).out, "root\n");
  ASSERT_EQ(Kill(SIGTERM), 0);
  EXPECT_FALSE(IsMounted(other_mnt));

  // A bad configuration stops the start with the file and line, exit 2.
  WriteAll(conf_, "store = " + store_ + "\nthreads = lots\n");
  ASSERT_NO_FATAL_FAILURE(Start());
  EXPECT_FALSE(WaitNotify("READY=1", 10));
  EXPECT_EQ(exit_, 2);
  EXPECT_TRUE(Contains(ReadAll(log_), "<3>" + conf_ + ":2: threads must be 1..64")) << ReadAll(log_);
}

TEST_F(ServiceTest, TemplateInstanceHasItsOwnConfigurationAndStore) {
  // hookfs@demo: ExecStart= reads /etc/hookfs/demo.conf; a configuration
  // without `store` gets HOOKFS_STORE=/var/lib/hookfs/demo from Environment=.
  mounts_ = {mnt_};
  std::string unit = kSrc + "/systemd/hookfs@.service";
  std::vector<std::string> exec = Split(Directive(unit, "ExecStart"));
  ASSERT_EQ(exec.size(), 4u);
  EXPECT_EQ(exec[0] + " " + exec[1] + " " + exec[2], "/usr/bin/hookfs -f --config");
  EXPECT_EQ(exec[3], "/etc/hookfs/%i.conf");
  std::string env = Directive(unit, "Environment");
  ASSERT_EQ(env, "HOOKFS_STORE=/var/lib/hookfs/%i");
  EXPECT_EQ(Directive(unit, "StateDirectory"), "hookfs/%i");
  // The instance's paths, moved under the test's directory.
  std::string instance_store = base_ + "/var/lib/hookfs/demo";
  stdfs::create_directories(instance_store);  // what StateDirectory=hookfs/%i does
  env_["HOOKFS_STORE"] = instance_store;
  unit_ = "hookfs@.service";
  WriteAll(conf_, "mountpoint = " + mnt_ + "\n");  // no store: the instance's default
  ASSERT_NO_FATAL_FAILURE(StartReady());
  EXPECT_TRUE(Contains(Notes(), "STATUS=serving " + instance_store + " on " + mnt_)) << Notes();
  EXPECT_TRUE(stdfs::exists(instance_store + "/data.mdb"));
  ASSERT_EQ(Kill(SIGTERM), 0);
  EXPECT_FALSE(IsMounted(mnt_));
}

// ---- permissions as the configuration sets them (DESIGN.md §4) ---------------------------------

class ServicePermissionTest : public ServiceTest {
 protected:
  void SetUp() override {
    ServiceTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    std::string tag = std::to_string(::getpid() % 100000);
    pub_ = "hsvpub" + tag;
    run_ = "hsvrun" + tag;
    publisher_ = "hsvp" + tag;
    runner_ = "hsvr" + tag;
    outsider_ = "hsvo" + tag;
    ASSERT_TRUE(Sh("groupadd " + pub_).ok());
    groups_ = true;
    ASSERT_TRUE(Sh("groupadd " + run_).ok());
    for (auto [user, group] : {std::pair{publisher_, pub_}, std::pair{runner_, run_}, std::pair{outsider_, std::string()}}) {
      Cmd c = Sh("useradd -M -N -g users " + (group.empty() ? "" : "-G " + group + " ") + user);
      ASSERT_TRUE(c.ok()) << c.err;
      users_.push_back(user);
    }
  }
  void TearDown() override {
    ServiceTest::TearDown();
    for (const std::string& u : users_) Sh("userdel " + u);
    if (groups_) {
      Sh("groupdel " + pub_);
      Sh("groupdel " + run_);
    }
  }
  Cmd As(const std::string& user, const std::string& cmd) { return Sh("runuser -u " + user + " -- sh -c " + Q(cmd)); }
  static bool Denied(const Cmd& c) { return c.status != 0 && Contains(c.err, "Permission denied"); }
  uid_t Uid(const std::string& user) {
    passwd* pw = ::getpwnam(user.c_str());
    return pw ? pw->pw_uid : static_cast<uid_t>(-1);
  }

  std::string pub_, run_, publisher_, runner_, outsider_;
  std::vector<std::string> users_;
  bool groups_ = false;
};

TEST_F(ServicePermissionTest, ConfiguredGroupsDecideWhoWrites) {
  mounts_ = {mnt_};
  WriteConfig("allow_other = yes\npublish_group = " + pub_ + "\nrun_group = " + run_ + "\n");
  ASSERT_NO_FATAL_FAILURE(StartReady());
  EXPECT_TRUE(Contains(MountOptionsOf(mnt_), "nosuid")) << MountOptionsOf(mnt_);
  EXPECT_TRUE(Contains(MountOptionsOf(mnt_), "nodev")) << MountOptionsOf(mnt_);
  std::string h = Hook("perm");
  ASSERT_TRUE(Sh("cp " + Q(Pack("perm", "one\n")) + " " + Q(mnt_ + "/incoming/1.pack")).ok());
  ASSERT_TRUE(Sh("ln -s ../releases/1 " + Q(h + "/tags/stable")).ok());
  std::string p2 = Pack("perm", "two\n");
  std::string p3 = Pack("perm", "three\n");

  // Everyone reads.
  for (const std::string& u : users_) {
    EXPECT_EQ(As(u, "cat " + h + "/live/version").out, "one\n") << u;
    EXPECT_TRUE(As(u, "ls " + h + "/releases " + mnt_ + "/journal").ok()) << u;
  }

  auto snapshot = [&] {
    return Sh("ls " + Q(h + "/releases") + " " + Q(h + "/runs") + " " + Q(mnt_ + "/incoming") + "; readlink " +
              Q(h + "/live") + " " + Q(h + "/tags/stable") + "; ls " + Q(h + "/tags"))
        .out;
  };
  const std::string before = snapshot();

  // Neither the outsider nor the runner may publish or move live or tags.
  for (const std::string& u : {outsider_, runner_}) {
    EXPECT_TRUE(Denied(As(u, "cp " + p2 + " " + mnt_ + "/incoming/x.pack"))) << u;
    EXPECT_TRUE(Denied(As(u, "ln -sfn releases/1 " + h + "/live"))) << u;
    EXPECT_TRUE(Denied(As(u, "ln -sfn ../releases/1 " + h + "/tags/stable"))) << u;
    EXPECT_TRUE(Denied(As(u, "ln -s ../releases/1 " + h + "/tags/canary"))) << u;
    EXPECT_TRUE(Denied(As(u, "rm -f " + h + "/tags/stable"))) << u;
  }
  // Neither the outsider nor the publisher may start runs.
  for (const std::string& u : {outsider_, publisher_}) {
    EXPECT_TRUE(Denied(As(u, "mkdir " + h + "/runs/r-" + u))) << u;
  }
  EXPECT_EQ(snapshot(), before) << "a refused write changed something";

  // The publisher publishes, moves live and tags.
  Cmd cp = As(publisher_, "cp " + p2 + " " + mnt_ + "/incoming/2.pack");
  ASSERT_TRUE(cp.ok()) << cp.err;
  EXPECT_EQ(Sh("readlink " + Q(h + "/live")).out, "releases/2\n");
  ASSERT_TRUE(As(publisher_, "ln -sfn releases/1 " + h + "/live").ok());
  EXPECT_EQ(Sh("readlink " + Q(h + "/live")).out, "releases/1\n");
  ASSERT_TRUE(As(publisher_, "ln -sfn ../releases/2 " + h + "/tags/stable").ok());
  EXPECT_EQ(Sh("readlink " + Q(h + "/tags/stable")).out, "../releases/2\n");
  ASSERT_TRUE(As(publisher_, "ln -s ../releases/1 " + h + "/tags/canary").ok());
  ASSERT_TRUE(As(publisher_, "rm " + h + "/tags/canary").ok());
  ASSERT_TRUE(As(publisher_, "cp " + p3 + " " + mnt_ + "/incoming/3.pack").ok());

  // The runner starts and finishes a run; the outsider cannot finish it.
  ASSERT_TRUE(As(runner_, "mkdir " + h + "/runs/r1").ok());
  EXPECT_TRUE(Denied(As(outsider_, "echo '{\"status\":\"failed\",\"exit_code\":1}' > " + h + "/runs/r1/result")));
  Cmd fin = As(runner_, "echo '{\"status\":\"succeeded\",\"exit_code\":0}' > " + h + "/runs/r1/result");
  ASSERT_TRUE(fin.ok()) << fin.err;
  EXPECT_TRUE(Contains(ReadAll(h + "/runs/r1/run.json"), "succeeded"));

  // Every write is in the log with the uid that did it. (Refusals above came
  // from the kernel's default_permissions check: they never reach the daemon.)
  std::string log = ReadAll(log_);
  std::string pu = std::to_string(Uid(publisher_)), ru = std::to_string(Uid(runner_));
  for (const std::string& want :
       {"<6>incoming/2.pack: uid " + pu + ": perm release 2 accepted", "<6>incoming/2.pack: published by uid " + pu,
        "<6>perm/live -> 1 by uid " + pu, "<6>perm/tags/stable -> 2 by uid " + pu,
        "<6>perm/tags/canary removed by uid " + pu, "<6>run perm/r1 started on release 3 by uid " + ru,
        "<6>run perm/r1 finished: succeeded (exit code 0) by uid " + ru}) {
    EXPECT_TRUE(Contains(log, want)) << "missing: " << want << "\n" << log;
  }

  ASSERT_EQ(Kill(SIGTERM), 0);
  EXPECT_FALSE(IsMounted(mnt_));
}

}  // namespace
}  // namespace hookfs::mount_test
