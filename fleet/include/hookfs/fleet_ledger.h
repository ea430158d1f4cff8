// FleetLedger: the fleet's ledger protocol on etcd and its objects in S3
// (DESIGN §9, docs/fleet.md "Key layout"). It is the etcd/S3 half of fleet
// mode; wiring it under the local store and fs/ is NOT done yet (docs/fleet.md
// "Status").
//
// Contract:
// - Objects: UploadObject stores bytes under F/objects/SHA256HEX (computed
//   here, never taken from the caller), If-None-Match, as parts when larger
//   than S3Client::kDefaultPartSize. FetchObject returns bytes only after
//   their SHA-256 equals the id asked for; a wrong byte is kCorruption and a
//   log line, never returned.
// - AssignVersion: one etcd txn compares the mod_revision of seq/HOOK and the
//   absence of digests/HOOK/DIGEST, and puts seq, the release record, the
//   digest index (and live unless advance is false) together: versions are
//   gap-free fleet-wide and a digest gets at most one version. A lost compare
//   is retried within `budget`; past it kTimedOut. A kTimedOut from etcd
//   means "unknown": the txn may still apply (the follower then brings it).
//   The caller uploads every object of the release BEFORE calling it.
// - MovePointer: compare-and-set of pointers/HOOK/{live,tags/T} against the
//   revision just read, with the target release required to exist in etcd;
//   to == 0 removes the pointer (tags only). kInvalidArgument when the
//   release does not exist.
// - FleetFollower: changes of the fleet's prefix in revision order from a
//   revision the caller applied; when that revision was compacted (or is 0)
//   it returns one full snapshot instead, which the caller applies as the
//   whole truth. Not thread-safe; one per applying thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hookfs/etcd.h"
#include "hookfs/object_id.h"
#include "hookfs/s3.h"
#include "hookfs/status.h"

namespace hookfs {

struct FleetOptions {
  std::string fleet;  // F: keys under /hookfs/F/, objects under F/ in the bucket
  std::string host;   // recorded in every release record
  std::chrono::milliseconds budget{5000};  // §9: a write fails within 5 s
};

// The etcd keys of docs/fleet.md.
struct FleetKeys {
  std::string prefix;  // /hookfs/F/
  explicit FleetKeys(const std::string& fleet) : prefix("/hookfs/" + fleet + "/") {}
  std::string Hook(std::string_view h) const;
  std::string Seq(std::string_view h) const;
  std::string Release(std::string_view h, uint32_t v) const;  // version zero-padded to 10
  std::string Digest(std::string_view h, const ObjectId& d) const;
  // pointer: "live" or "tags/TAG"
  std::string Pointer(std::string_view h, std::string_view pointer) const;
};

struct FleetPublish {
  uint32_t version = 0;
  bool duplicate = false;  // the digest already had this version; nothing was written
  int64_t revision = 0;    // etcd revision of the txn (or of the read that found the duplicate)
  int attempts = 0;        // txns sent (lost compares + 1)
};

// One change under the prefix, decoded. Keys other than releases and
// pointers (seq, digests, hooks) are carried in their own transactions'
// release records and are not reported.
struct FleetChange {
  enum class Kind { kRelease, kPointer };
  Kind kind = Kind::kRelease;
  std::string hook;
  uint32_t version = 0;  // release: its version; pointer: the target, 0 = removed
  std::string pointer;   // "live" or "tags/TAG"
  nlohmann::json record; // release: the record as stored
  int64_t revision = 0;  // etcd mod_revision of the change
};

struct FleetBatch {
  bool full = false;      // a snapshot at `revision`: the whole truth, not a delta
  int64_t revision = 0;   // applied through this revision once the batch is applied
  std::vector<FleetChange> changes;
};

class FleetLedger {
 public:
  FleetLedger(EtcdClient* etcd, S3Client* s3, FleetOptions options);

  const FleetOptions& options() const { return options_; }
  const FleetKeys& keys() const { return keys_; }
  EtcdClient* etcd() const { return etcd_; }
  std::string ObjectKey(const ObjectId& id) const;

  Result<ObjectId> UploadObject(std::string_view bytes);
  Result<std::string> FetchObject(const ObjectId& id);

  // record: the release's metadata (source_ref, message, files, bytes, …);
  // hook, version, digest, host and request are set here.
  Result<FleetPublish> AssignVersion(std::string_view hook, const ObjectId& digest,
                                     nlohmann::json record, bool advance = true);
  // Returns the etcd revision of the move.
  Result<int64_t> MovePointer(std::string_view hook, std::string_view pointer, uint32_t to);

  // Linearizable reads of the fleet's truth.
  Result<std::optional<uint32_t>> GetPointer(std::string_view hook, std::string_view pointer);
  Result<nlohmann::json> GetRelease(std::string_view hook, uint32_t version);

  // Decodes one key/value under the prefix; nullopt for keys not reported.
  std::optional<FleetChange> Decode(const KeyValue& kv, bool deleted) const;

 private:
  EtcdClient* etcd_;
  S3Client* s3_;
  FleetOptions options_;
  FleetKeys keys_;
};

class FleetFollower {
 public:
  // applied_revision: the last revision the caller applied (0: none).
  FleetFollower(FleetLedger* ledger, int64_t applied_revision);
  ~FleetFollower();
  // Waits up to `wait`. An empty delta batch when nothing changed; kIOError
  // when the stream broke (the next call re-opens it from revision() + 1).
  Result<FleetBatch> Next(std::chrono::milliseconds wait);
  int64_t revision() const { return revision_; }

 private:
  Result<FleetBatch> Snapshot();
  FleetLedger* ledger_;
  int64_t revision_;
  std::unique_ptr<EtcdWatch> watch_;
};

}  // namespace hookfs
