// Retention (DESIGN.md §7; docs/retention.md): which releases a store keeps
// whole, and pruning the others.
//
// Per hook, a release is kept when it is one of the newest `keep` releases
// that are not pruned yet, when live or a tag points to it, when an open run
// is pinned to it, or when a run that finished less than `recent_run_s` ago
// used it. Every other release is pruned: its record stays with
// pruned = true, its digest leaves the digest index (publishing that content
// again mints a new version), a `prune` journal line records it, and the gc
// that follows drops the objects no kept release reaches.
//
// Each hook's decision and its record updates happen in ONE write txn that
// reads the pointers and runs itself, and the ledger refuses a pointer move
// or run start to a pruned release inside its own write txn (InvalidArgument),
// so pruning never races a publish, a move or a run start: whatever they pin
// when the prune txn runs is kept, and nothing can pin a pruned release later.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "hookfs/gc.h"
#include "hookfs/ledger.h"
#include "hookfs/store.h"

namespace hookfs {

struct RetentionOptions {
  uint32_t keep = 0;                    // newest N per hook; must be >= 1
  int64_t recent_run_s = 7 * 24 * 3600;  // runs finished this recently keep their release
  int64_t now = 0;                      // Unix seconds; 0: the clock (tests set it)
  Actor actor = Actor::Current();
};

struct PruneReport {
  uint64_t hooks = 0, releases = 0, kept = 0;
  std::vector<std::string> pruned;  // "hook/N", in order
  nlohmann::json ToJson() const;
};

// Prunes every release outside retention. InvalidArgument for keep == 0.
Result<PruneReport> PruneReleases(Store* store, const RetentionOptions& options);

// What `hookctl gc --keep N` and the daemon's `-o keep=N` do: prune, then
// collect the garbage the pruned releases left.
struct RetentionReport {
  PruneReport prune;
  GcReport gc;
  nlohmann::json ToJson() const;
  std::string Summary() const;
};
Result<RetentionReport> ApplyRetention(Store* store, const RetentionOptions& options, const GcOptions& gc = {});

}  // namespace hookfs
