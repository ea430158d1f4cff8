// Who may do what (DESIGN.md §4) and what `ls -l` shows for it.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <optional>
#include <string>

#include "hookfs/ledger.h"
#include "hookfs/status.h"

namespace hookfs::fs {

enum class Right { kPublish, kRun };

struct Policy {
  uid_t owner_uid = 0;  // the mounting user (root under systemd)
  gid_t owner_gid = 0;
  std::optional<gid_t> publish_gid;
  std::optional<gid_t> run_gid;

  // Root and the mounting user may do all; members (primary or supplementary
  // group) of the right's group may do that. EACCES otherwise.
  Status Check(fuse_req_t req, Right right, std::string_view what) const;

  // Owner group and mode of a directory where `right` creates entries.
  gid_t GroupFor(Right right) const;
  mode_t WritableDirMode(Right right) const;
};

// Resolves "G" (a group name or a number).
Result<gid_t> ResolveGroup(const std::string& name);

// The caller as the ledger records it.
Actor ActorOf(fuse_req_t req);

}  // namespace hookfs::fs
