// Mount lifecycle helpers: stale mountpoints, readahead, mount options.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hookfs/status.h"

namespace hookfs::fs {

// If `mnt` is left stale by a dead daemon ("Transport endpoint is not
// connected"), runs `fusermount3 -uz mnt`. OK if it was not stale.
Status RecoverStaleMount(const std::string& mnt);

// major:minor of the filesystem mounted at `mnt` (from /proc/self/mountinfo,
// without touching the mount itself), or nullopt.
std::optional<std::string> MountDevice(const std::string& mnt);

// Best effort: /sys/class/bdi/<dev>/read_ahead_kb = kb.
void SetReadAhead(const std::string& dev, unsigned kb);

struct MountOptions {
  bool allow_other = false;
  std::optional<std::string> publish_group;
  std::optional<std::string> run_group;
  std::vector<std::string> fuse;  // passed to libfuse as they are
};

// Parses the comma-separated -o lists.
Result<MountOptions> ParseMountOptions(const std::vector<std::string>& lists);

}  // namespace hookfs::fs
