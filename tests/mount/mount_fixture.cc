#include "mount_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace hookfs::mount_test {

std::string Q(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out.push_back(c);
  }
  return out + "'";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& data, mode_t mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << data;
  }
  ::chmod(path.c_str(), mode);
}

Cmd Sh(const std::string& cmd) {
  char out_tmpl[] = "/tmp/hookfs-sh-out-XXXXXX";
  char err_tmpl[] = "/tmp/hookfs-sh-err-XXXXXX";
  int ofd = ::mkstemp(out_tmpl);
  int efd = ::mkstemp(err_tmpl);
  Cmd r;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(ofd, 1);
    ::dup2(efd, 2);
    int nul = ::open("/dev/null", O_RDONLY);
    ::dup2(nul, 0);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = ReadAll(out_tmpl);
  r.err = ReadAll(err_tmpl);
  ::close(ofd);
  ::close(efd);
  ::unlink(out_tmpl);
  ::unlink(err_tmpl);
  return r;
}

std::string MountId(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, dev, root, point;
    if (ls >> id >> parent >> dev >> root >> point && point == mnt) found = id;  // last: on top
  }
  return found;
}

bool IsMounted(const std::string& mnt) { return !MountId(mnt).empty(); }

void MountTest::SetUp() {
  if (::access("/dev/fuse", F_OK) != 0) {
    GTEST_SKIP() << "/dev/fuse is missing: the mount tests need FUSE (run in a VM or a "
                    "container with --device /dev/fuse)";
  }
  char tmpl[] = "/tmp/hookfs-mount-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  base_ = tmpl;
  ::chmod(base_.c_str(), 0755);  // the permission tests run tools as other users
  store_ = base_ + "/store";
  mnt_ = base_ + "/mnt";
  log_ = base_ + "/daemon.log";
  ASSERT_EQ(::mkdir(store_.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
}

void MountTest::Mount(const std::string& options) {
  ASSERT_EQ(daemon_, -1) << "already mounted";
  struct stat base_st{};
  ASSERT_EQ(::stat(base_.c_str(), &base_st), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 2);
    ::dup2(fd, 1);
    // HOOKFS_TEST_BIN runs another build of the daemon (a sanitizer build).
    const char* env_bin = std::getenv("HOOKFS_TEST_BIN");
    std::string bin = env_bin && *env_bin ? env_bin : HOOKFS_BIN;
    std::vector<std::string> args = {bin, "--store", store_, "-f", "--log-level", "debug"};
    if (!options.empty()) {
      args.push_back("-o");
      args.push_back(options);
    }
    args.push_back(mnt_);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  daemon_ = pid;
  // Mounted and answering (a stale mount of a crashed daemon is listed too,
  // but statfs gives ENOTCONN; mount ids and device numbers are reused).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  for (;;) {
    struct stat st{};
    struct statfs sfs{};
    if (IsMounted(mnt_) && ::statfs(mnt_.c_str(), &sfs) == 0 && ::stat(mnt_.c_str(), &st) == 0 &&
        st.st_dev != base_st.st_dev) {
      break;
    }
    int status;
    if (::waitpid(daemon_, &status, WNOHANG) == daemon_) {
      daemon_ = -1;
      FAIL() << "hookfs exited before mounting; log:\n" << ReadAll(log_);
    }
    if (std::chrono::steady_clock::now() > deadline) FAIL() << "not mounted after 15 s:\n" << ReadAll(log_);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int MountTest::Unmount() {
  if (daemon_ < 0) return -1;
  ::kill(daemon_, SIGTERM);
  int status = 0;
  bool exited = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(daemon_, &status, WNOHANG) == daemon_) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!exited) {
    ::kill(daemon_, SIGKILL);
    ::waitpid(daemon_, &status, 0);
  }
  daemon_ = -1;
  if (IsMounted(mnt_)) Sh("/bin/fusermount3 -uz " + Q(mnt_));
  if (!exited) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void MountTest::Crash() {
  ASSERT_GT(daemon_, 0);
  ::kill(daemon_, SIGKILL);
  int status;
  ::waitpid(daemon_, &status, 0);
  daemon_ = -1;
}

void MountTest::TearDown() {
  if (base_.empty()) return;
  Unmount();
  if (IsMounted(mnt_)) Sh("/bin/fusermount3 -uz " + Q(mnt_));
  if (HasFailure()) {
    std::cerr << "---- daemon log (" << log_ << ") ----\n" << ReadAll(log_) << "----\n";
  }
  if (!IsMounted(mnt_)) {
    std::error_code ec;
    std::filesystem::remove_all(base_, ec);
  }
}

std::string MountTest::NewDir(const std::string& name) {
  std::string d = base_ + "/" + name;
  std::filesystem::create_directories(d);
  return d;
}

std::string MountTest::Pack(const std::string& hook, const std::string& dir, const std::string& extra) {
  std::string out = base_ + "/pack" + std::to_string(++packs_) + ".pack";
  Cmd c = Sh(std::string(HOOKCTL_BIN) + " pack --hook " + Q(hook) + " " + extra + " -o " + Q(out) +
             " " + Q(dir));
  EXPECT_EQ(c.status, 0) << c.err;
  ::chmod(out.c_str(), 0644);
  return out;
}

Cmd MountTest::Publish(const std::string& pack, const std::string& name) {
  return Sh("cp " + Q(pack) + " " + Q(mnt_ + "/incoming/" + name));
}

}  // namespace hookfs::mount_test
