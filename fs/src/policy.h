// Who may do what (DESIGN.md §4): Policy and Caller are in hookfs/namespace.h;
// this adds what only the daemon's setup needs.
#pragma once

#include <string>

#include "hookfs/namespace.h"
#include "hookfs/status.h"

namespace hookfs::fs {

// Resolves "G" (a group name or a number).
Result<gid_t> ResolveGroup(const std::string& name);

}  // namespace hookfs::fs
