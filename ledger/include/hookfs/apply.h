// Apply: verify a pack and commit what verifies, atomically.
//
// Phases (DESIGN.md §2 "Atomicity", §4 "No publisher can harm another"):
//  1. Verify: one pass over the pack that writes nothing and holds no lock
//     anyone waits for: framing, limits, trailer, the SHA-256 of every blob
//     the store lacks, every tree's hash and canonical form. A record that
//     declares more bytes than the pack really holds (holes of a sparse file
//     excluded) is rejected before it is read. Only a compact index (48 bytes
//     per blob or tree record) is kept; trees are read back when needed.
//  2. Decide: from a read snapshot, walk each release's closure; accepted,
//     duplicate or rejected (naming the ids that block it). No write lock.
//  3. Write: the new blobs accepted releases need, after a free-space check,
//     read back from the pack and hashed again, into chunks registered under
//     a ChunkSession (invisible: no blob record points at them), in short
//     bounded txns that hold the write lock only to copy bytes already in
//     memory. Then one txn re-checks what may have changed since (a
//     concurrent duplicate, a hook created meanwhile, gc), assigns versions,
//     and writes blob records, trees, releases, pointers and journal
//     together, dropping the chunks no accepted release reaches.
// Any I/O or store error aborts the whole pack and reclaims its chunks (at
// once, or at the next Store::Open after a crash); a full disk is NoSpace.
// Poisoned objects block exactly the releases that reach them. The pack must
// be a regular file (it is read twice); a pipe is first received into an
// anonymous file in the store's staging/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "hookfs/ledger.h"
#include "hookfs/object_id.h"
#include "hookfs/status.h"

namespace hookfs {

struct ReleaseOutcome {
  enum class Kind { kAccepted, kDuplicate, kRejected };
  Kind kind = Kind::kRejected;
  std::string hook;
  ObjectId digest;              // computed by the store (declared if unverifiable)
  uint32_t version = 0;         // accepted: the new version; duplicate: the existing one
  std::string reason;           // rejected: why
  std::vector<ObjectId> bad_objects;  // rejected: the ids that block it
};

struct ApplyReport {
  std::string pack;      // the pack's name, for messages
  Status status;         // pack-level failure (malformed, I/O, no space); OK otherwise
  std::vector<ReleaseOutcome> releases;
  uint64_t blobs_written = 0;   // new blob records
  uint64_t chunks_written = 0;
  uint64_t trees_written = 0;
  uint64_t bytes_written = 0;   // blob bytes copied into the store
  // Damaged (quarantined) or missing objects this pack rewrote, and the
  // releases that became whole by it ("hook/N"). docs/integrity.md.
  uint64_t objects_healed = 0;
  std::vector<std::string> releases_healed;

  // OK if the pack parsed, committed, and no release was rejected.
  // Malformed (EBADMSG) if anything was rejected or the pack is unreadable.
  Status Verdict() const;
  nlohmann::json ToJson() const;
};

struct ApplyOptions {
  Actor actor = Actor::Current();
  std::string pack_name;  // for the report and the journal
  // -o require_signed: every hook is pinned (DESIGN.md §8, keys.h).
  bool require_signed = false;

  // Set by a caller that guarantees the pack's bytes cannot change until
  // ApplyPack returns (the daemon's incoming/ spool: written only through the
  // daemon, closed to writers while it is applied; docs/integrity.md). The
  // blobs pass 1 verified are then written without hashing them again.
  // Without it ApplyPack seals what it can itself (a pipe's private spool; a
  // file on a local filesystem under a read lease) and re-hashes the rest.
  bool sealed = false;
};

// Applies the pack read from `fd` (a file, or a pipe received into staging/ first).
// Never throws. The report's status says why nothing was committed when the
// pack as a whole failed.
ApplyReport ApplyPack(Ledger* ledger, int fd, const ApplyOptions& options);
// Opens `path` and applies it; the pack's name defaults to the file name.
ApplyReport ApplyPackFile(Ledger* ledger, const std::string& path, const ApplyOptions& options);

}  // namespace hookfs
