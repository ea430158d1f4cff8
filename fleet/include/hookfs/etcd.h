// EtcdClient: the etcd v3 API (gRPC) that a fleet's ledger is built on (DESIGN §9).
//
// Contract:
// - Every call has a deadline (EtcdOptions::timeout, whole call including
//   failover). etcd without quorum hangs instead of failing, so the deadline
//   is what turns it into Code::kTimedOut (ETIMEDOUT); a call never blocks
//   longer than its deadline plus a few milliseconds.
// - Endpoints are tried in order, starting with the last one that answered;
//   an attempt gets a third of the deadline, and a call moves on to the next
//   endpoint when one is unreachable, UNAVAILABLE or does not answer in its
//   attempt (a member whose leader died holds a request until etcd's own
//   timeout instead of re-proposing it). An attempt that timed out may still
//   apply, so Put and Txn can apply twice, and a call that returns kTimedOut
//   may have applied: ledger writes guard themselves with Txn compares and
//   check their outcome after a timeout (docs/fleet.md).
// - Errors: kTimedOut (deadline, or no endpoint reachable before it),
//   kInvalidArgument (a revision that was compacted: message says so; bad
//   request), kPermissionDenied (etcd auth), kIOError (anything else).
// - TLS: an https:// endpoint uses ca_file to verify the member and, when
//   cert_file/key_file are set, presents that client certificate.
// - Thread-safe: one client may serve every thread. Watch streams and lease
//   keepers are objects of their own that end (and join their thread) in
//   their destructor, which may wait for one call's deadline; neither may
//   outlive the client that made it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hookfs/status.h"

namespace hookfs {

struct EtcdOptions {
  std::vector<std::string> endpoints;  // "http://127.0.0.1:2379", "https://etcd1:2379"
  std::string ca_file, cert_file, key_file;  // PEM files, for https endpoints
  std::chrono::milliseconds timeout{3000};   // per call; fs adds its own work within §9's 5 s
};

// "a,b,c" -> {"a","b","c"} (the --etcd option's format).
std::vector<std::string> SplitEndpoints(const std::string& list);

struct KeyValue {
  std::string key, value;
  int64_t create_revision = 0, mod_revision = 0, version = 0, lease = 0;
};

struct RangeResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;  // the store's revision the range was read at
  int64_t count = 0;     // keys in range (kvs may be fewer with a limit)
  bool more = false;
};

// One condition of a transaction: TARGET(key) OP operand.
struct Compare {
  enum class Target { kVersion, kCreateRevision, kModRevision, kValue };
  enum class Op { kEqual, kGreater, kLess, kNotEqual };
  std::string key;
  Target target = Target::kModRevision;
  Op op = Op::kEqual;
  int64_t number = 0;  // for every target but kValue
  std::string value;   // for kValue

  static Compare ModRevision(std::string key, Op op, int64_t rev) {
    return {std::move(key), Target::kModRevision, op, rev, {}};
  }
  static Compare CreateRevision(std::string key, Op op, int64_t rev) {
    return {std::move(key), Target::kCreateRevision, op, rev, {}};
  }
  static Compare Version(std::string key, Op op, int64_t v) {
    return {std::move(key), Target::kVersion, op, v, {}};
  }
  static Compare Value(std::string key, Op op, std::string v) {
    return {std::move(key), Target::kValue, op, 0, std::move(v)};
  }
  // True iff the key does not exist (create_revision == 0).
  static Compare Absent(std::string key) { return CreateRevision(std::move(key), Op::kEqual, 0); }
};

// One operation of a transaction branch.
struct TxnOp {
  enum class Kind { kPut, kDelete, kRange };
  Kind kind = Kind::kPut;
  std::string key, value;
  bool prefix = false;  // kDelete/kRange: every key starting with key
  int64_t lease = 0;    // kPut

  static TxnOp Put(std::string k, std::string v, int64_t lease = 0) {
    return {Kind::kPut, std::move(k), std::move(v), false, lease};
  }
  static TxnOp Delete(std::string k, bool prefix = false) {
    return {Kind::kDelete, std::move(k), {}, prefix, 0};
  }
  static TxnOp Get(std::string k, bool prefix = false) {
    return {Kind::kRange, std::move(k), {}, prefix, 0};
  }
};

struct TxnResult {
  bool succeeded = false;           // the compares held: the success branch ran
  int64_t revision = 0;             // store revision after the txn
  std::vector<RangeResult> ranges;  // one per kRange op of the branch that ran, in order
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // for kDelete: key and mod_revision only
};

// What one read of a watch stream returns.
struct WatchBatch {
  std::vector<WatchEvent> events;  // in revision order
  int64_t revision = 0;            // the store's revision when the batch was sent
  bool progress = false;           // a progress notification: nothing changed up to revision
  // >0: start_revision was compacted; the stream has ended. The caller must
  // re-read everything (Range at a fresh revision) and watch from there + 1.
  int64_t compact_revision = 0;
};

// A watch stream over one key or one prefix, from start_revision.
// Next() waits up to `wait` for the next batch: kTimedOut when nothing came
// (the stream lives on), kIOError when the stream broke (member gone: open a
// new watch from the last revision seen + 1, on any endpoint).
class EtcdWatch {
 public:
  virtual ~EtcdWatch() = default;
  virtual Result<WatchBatch> Next(std::chrono::milliseconds wait) = 0;
  // Asks the member for a progress notification now (a batch with
  // progress = true and the member's current revision).
  virtual Status RequestProgress() = 0;
};

struct WatchOptions {
  std::string key;
  bool prefix = false;
  int64_t start_revision = 0;    // 0: from now on
  bool progress_notify = false;  // periodic progress notifications (etcd: every 10 min by
                                 // default); EtcdWatch::RequestProgress asks for one now
};

// Keeps one lease alive from a thread of its own until destroyed.
class LeaseKeeper {
 public:
  virtual ~LeaseKeeper() = default;
  virtual int64_t id() const = 0;
  // False once the lease could not be renewed before it expired (the keys
  // it held are gone).
  virtual bool alive() const = 0;
};

class EtcdClient {
 public:
  static Result<std::unique_ptr<EtcdClient>> Open(const EtcdOptions& options);
  virtual ~EtcdClient() = default;

  // key exactly; revision 0 = latest. serializable = answer from the member's
  // local state (no quorum needed, maybe stale).
  virtual Result<RangeResult> Get(const std::string& key, int64_t revision = 0,
                                  bool serializable = false) = 0;
  // Every key starting with prefix, in key order; limit 0 = all.
  virtual Result<RangeResult> GetPrefix(const std::string& prefix, int64_t revision = 0,
                                        int64_t limit = 0) = 0;
  // Returns the store revision of the put.
  virtual Result<int64_t> Put(const std::string& key, const std::string& value,
                              int64_t lease = 0) = 0;
  // Returns how many keys were deleted.
  virtual Result<int64_t> Delete(const std::string& key, bool prefix = false) = 0;
  virtual Result<TxnResult> Txn(const std::vector<Compare>& compares,
                                const std::vector<TxnOp>& success,
                                const std::vector<TxnOp>& failure = {}) = 0;
  // Drops history before revision (tests, and a fleet admin's tool).
  virtual Status Compact(int64_t revision) = 0;

  // Leases: Grant returns the id; the keys put with it vanish ttl after the
  // last renewal.
  virtual Result<int64_t> LeaseGrant(int64_t ttl_seconds) = 0;
  virtual Status LeaseRevoke(int64_t id) = 0;
  // One renewal; returns the TTL etcd granted (0 or kNotFound: expired).
  virtual Result<int64_t> LeaseKeepAliveOnce(int64_t id) = 0;
  // Renews every ttl/3 from its own thread.
  virtual Result<std::unique_ptr<LeaseKeeper>> KeepAlive(int64_t id, int64_t ttl_seconds) = 0;

  // Opens a watch; the call returns once etcd confirmed it (or the deadline).
  virtual Result<std::unique_ptr<EtcdWatch>> Watch(const WatchOptions& options) = 0;
};

}  // namespace hookfs
