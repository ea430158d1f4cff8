// Mount lifecycle helpers: stale mountpoints, readahead, mount options, the
// configuration file, logging and systemd notification (docs/service.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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
  // Per-user bounds (DESIGN.md §4, docs/security.md); unset: the defaults.
  std::optional<size_t> max_packs_per_user;        // max_packs_per_user=N (64)
  std::optional<unsigned> pack_idle_timeout;       // pack_idle_timeout=SECONDS (600)
  std::optional<size_t> max_temp_links_per_user;   // max_temp_links_per_user=N (64)
  std::optional<unsigned> temp_link_ttl;           // temp_link_ttl=SECONDS (600)
  // Keys and retention (DESIGN.md §7, §8).
  std::optional<uint32_t> keep;         // keep=N: prune in the background
  bool require_signed = false;          // require_signed: every hook is pinned
  std::optional<std::string> admin_group;  // admin_group=G: may add and remove keys
};

// Parses the comma-separated -o lists.
Result<MountOptions> ParseMountOptions(const std::vector<std::string>& lists);

// The configuration file (/etc/hookfs/hookfs.conf): `key = value` lines,
// `#` comments, blank lines. Every key is optional; command-line options
// override what the file says (docs/service.md).
struct ServiceConfig {
  std::optional<std::string> store;
  std::optional<std::string> mountpoint;
  std::optional<std::string> publish_group;
  std::optional<std::string> run_group;
  std::optional<std::string> log_level;
  std::optional<bool> allow_other;
  std::optional<unsigned> threads;
  std::optional<uint32_t> keep;
  std::optional<bool> require_signed;
  std::optional<std::string> admin_group;
  std::optional<std::string> host;
};

// keep=N: 1..1000000 (0 would prune every release not pinned otherwise).
Result<uint32_t> ParseKeep(std::string_view value);

// Parses the text of a configuration file; `origin` names it in messages
// ("FILE:LINE: ..."). Unknown keys, repeated keys and bad values are errors.
Result<ServiceConfig> ParseConfig(std::string_view text, const std::string& origin);
Result<ServiceConfig> ReadConfigFile(const std::string& path);

// True when stderr is the journal's stream (systemd sets JOURNAL_STREAM to
// the "device:inode" of the socket it gives the service as stderr).
bool StderrIsJournal();

// spdlog to stderr. `journal`: lines carry sd-daemon(3) priority prefixes
// ("<3>" error, "<4>" warn, "<6>" info, "<7>" debug and trace, "<2>"
// critical) and no time stamp (journald adds its own); otherwise a time stamp
// and the level name.
void SetupLogging(bool journal);

// sd_notify(3) to $NOTIFY_SOCKET (no-op without it, or without libsystemd).
void Notify(const std::string& state);

// Blocks until the filesystem at `mnt` answers statfs (f_type FUSE). False
// if the mount went away (ENOTCONN, or `mnt` is no longer a FUSE mount).
bool WaitUntilServing(const std::string& mnt);

}  // namespace hookfs::fs
