// fsck: verify a store end to end; repair what can be repaired.
//
// Checks (docs/integrity.md): the store format version; every blob (record,
// each chunk's XXH3 read in order, SHA-256 of the content = id, no chunk
// missing or extra); every tree (checksum, canonical decode, SHA-256 = id,
// entries resolve, file sizes match their blobs); every release (record,
// hook, versions 1..N, root is a tree, closure complete, files/bytes, the
// damaged flag); the times table (release_times.h); the digests index; pointers and their history; runs; the
// journal (seq 1..N, JSON); pending chunk sessions; orphan chunks; the
// quarantine table. Reads use one short read txn per object or small group,
// so fsck runs beside a serving daemon without pinning old pages.
//
// Repair (needs a Store opened with StoreOptions::exclusive): quarantines
// damaged objects (BlobInfo flag kBlobQuarantined and a quarantine entry that
// lists the releases reaching the object), marks those releases damaged (and
// whole ones undamaged), rebuilds the digests index from the releases,
// deletes orphan and extra chunks, and lifts quarantine from objects that
// verify again. Abandoned chunk sessions and staging files are reclaimed by
// Store::Open itself.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "hookfs/ledger.h"
#include "hookfs/store.h"

namespace hookfs {

struct FsckProblem {
  // blob, tree, chunk, release, hook, digests, pointer, history, run,
  // journal, pending, quarantine, meta, times
  std::string kind;
  std::string object;  // an id in hex, "hook/N", a key...
  std::string what;
  std::vector<std::string> releases;  // "hook/N" that reach it (objects only)
  bool garbage = false;  // reclaimable leftovers, not damage (exit 0)
  bool fixed = false;    // repaired for good by this run (derived records, stale marks)
};

struct FsckOptions {
  bool repair = false;
  // Called now and then: phase ("blobs", "trees", ...), work done, total.
  std::function<void(std::string_view phase, uint64_t done, uint64_t total)> progress;
};

struct FsckReport {
  uint64_t blobs = 0, chunks = 0, bytes = 0, trees = 0, hooks = 0, releases = 0, pointers = 0, history = 0,
           runs = 0, journal = 0;
  std::vector<FsckProblem> problems;
  std::vector<std::string> damaged_releases;  // "hook/N", sorted
  // Repair's work.
  bool repaired = false;
  uint64_t quarantined = 0, unquarantined = 0, marked_damaged = 0, marked_whole = 0, digests_rebuilt = 0,
           chunks_deleted = 0, releases_fixed = 0;

  size_t damage() const;  // problems that are neither garbage nor fixed
  bool clean() const { return damage() == 0; }
  nlohmann::json ToJson() const;
  // Human summary: one line per problem naming the object and the releases
  // that reach it, then the totals.
  std::string Summary() const;
};

// Runs fsck on `store`. A Result error means fsck could not run (exit 2);
// damage found is in the report (exit 1).
Result<FsckReport> Fsck(Store* store, const FsckOptions& options);

namespace quarantine {
struct Entry {
  std::string reason;
  std::vector<std::pair<std::string, uint32_t>> releases;  // hook, version
};
std::string Encode(const Entry& e);
Result<Entry> Decode(std::string_view bytes);

// In a write txn that has just rewritten the objects `healed` ('b'|'t', id)
// from verified pack data: drops their quarantine entries (and blob flags
// are the caller's), and marks whole every release that no remaining entry
// lists. `whole` receives "hook/N" of the releases made whole.
Status Heal(const Tables& t, lmdb::Txn& txn, const std::vector<std::pair<char, ObjectId>>& healed,
            std::vector<std::string>* whole);
}  // namespace quarantine

}  // namespace hookfs
