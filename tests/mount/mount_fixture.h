// A hookfs mount for one test: temp store + mountpoint, the real daemon in
// the foreground as a child, and shell helpers. TearDown always unmounts.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace hookfs::mount_test {

struct Cmd {
  int status = -1;     // exit code (or 128 + signal)
  std::string out;     // stdout
  std::string err;     // stderr
  bool ok() const { return status == 0; }
};

// Runs `cmd` with /bin/sh -c, capturing stdout and stderr.
Cmd Sh(const std::string& cmd);
// Single-quotes for the shell.
std::string Q(const std::string& s);
std::string ReadAll(const std::string& path);
void WriteAll(const std::string& path, const std::string& data, mode_t mode = 0644);
bool IsMounted(const std::string& mnt);
// The id of the mount on top of `mnt` in /proc/self/mountinfo, "" if none.
std::string MountId(const std::string& mnt);

class MountTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts the daemon with extra -o options; waits for the mount.
  void Mount(const std::string& options = "");
  // SIGTERM, wait; returns the daemon's exit status (-1 if it had to be killed).
  int Unmount();
  // SIGKILL: leaves the mountpoint stale.
  void Crash();

  // hookctl pack --hook HOOK [extra] -o OUT DIR; returns OUT.
  std::string Pack(const std::string& hook, const std::string& dir, const std::string& extra = "");
  // cp PACK MNT/incoming/NAME.
  Cmd Publish(const std::string& pack, const std::string& name);
  std::string Hook(const std::string& hook) const { return mnt_ + "/hooks/" + hook; }
  // A fresh directory under the test's base dir.
  std::string NewDir(const std::string& name);

  std::string base_, store_, mnt_, log_;
  pid_t daemon_ = -1;
  int packs_ = 0;
};

}  // namespace hookfs::mount_test
