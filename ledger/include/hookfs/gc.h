// gc: drop blobs, chunks and trees that no release reaches. Safe while the
// daemon serves and publishes (docs/integrity.md, "gc"):
//
//  1. Mark, from short read txns: the closure of every release.
//  2. Candidates: stored trees and blobs outside it, and chunks of no blob
//     record and no chunk session in flight.
//  3. Sweep, in ONE write txn: walk the closure of every release committed
//     since the mark (an apply may have relied on a candidate as "already
//     stored"), spare what they reach, and delete the remaining candidates
//     unless a chunk session has registered their id meanwhile.
// An apply, in turn, re-checks in its final txn that every stored object it
// relied on still exists (ApplyPack), so whichever of the two write txns
// commits first, no committed release ever loses an object. A reachable tree
// that does not verify stops gc (it cannot tell what that tree reaches).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "hookfs/store.h"

namespace hookfs {

struct GcReport {
  uint64_t releases = 0, reachable_trees = 0, reachable_blobs = 0;
  uint64_t trees_removed = 0, blobs_removed = 0, chunks_removed = 0, bytes_removed = 0, orphan_chunks_removed = 0;
  uint64_t spared = 0;  // candidates reached by releases committed during gc
  nlohmann::json ToJson() const;
  std::string Summary() const;
};

struct GcOptions {
  std::function<void(std::string_view phase, uint64_t done, uint64_t total)> progress;
};

Result<GcReport> CollectGarbage(Store* store, const GcOptions& options);

}  // namespace hookfs
