// Ledger: hooks, releases, live and tag pointers with their history, runs and
// the journal, in the same LMDB environment as the objects.
//
// Tables (keys; `\0` separates a hook name from the rest):
//   hooks     name                      -> JSON HookInfo
//   releases  name \0 u32be version     -> JSON ReleaseInfo
//   digests   name \0 digest[32]        -> u32be version   (duplicate detection)
//   pointers  name \0 "live" | "tag:" T -> u32be version
//   history   name \0 u64be seq         -> JSON PointerMove
//   runs      name \0 run               -> JSON RunInfo
//   journal   u64be seq                 -> JSON event line
// Versions are assigned inside the write txn that commits a release, so they
// run 1..N per hook with no gap under any concurrency. Every pointer move and
// every run event is written in the same txn as its history/journal line.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "hookfs/object_id.h"
#include "hookfs/status.h"
#include "hookfs/store.h"

namespace hookfs {

// Who asks. uid is what the ledger records; name is for humans.
struct Actor {
  uint32_t uid = 0;
  std::string name;
  static Actor Current();  // the calling process's uid and user name
};

struct HookInfo {
  std::string name;
  std::string feature;
  int64_t created_at = 0;   // Unix seconds
  uint32_t created_by = 0;  // uid
  // Some trusted key has covered this hook: only signed releases are
  // accepted for it from then on, even after the key is revoked (keys.h).
  bool pinned = false;
};

// Who signed a release: the trusted key's name and id (hex), as it was at commit.
struct SignedBy {
  std::string key;
  std::string key_id;
};

struct ReleaseInfo {
  std::string hook;
  uint32_t version = 0;
  ObjectId digest;
  std::string source_ref;
  std::string message;
  uint32_t published_by = 0;
  int64_t created_at = 0;    // the client's claim
  int64_t committed_at = 0;  // the store's clock
  uint64_t files = 0;        // regular files, counted per path
  uint64_t bytes = 0;        // their sizes, summed per path
  bool damaged = false;      // reaches a damaged object (fsck --repair); cleared by healing
  std::optional<SignedBy> signed_by;  // null: unsigned (an unpinned hook)
  // Retention dropped its files (retention.h): the record stays, the
  // version is never reused, no pointer or run may target it again.
  bool pruned = false;
};

struct PointerMove {
  uint64_t seq = 0;
  int64_t time = 0;
  uint32_t uid = 0;
  std::string pointer;  // "live" or "tags/NAME"
  uint32_t from = 0;    // 0: did not exist
  uint32_t to = 0;      // 0: removed
};

struct RunInfo {
  std::string hook;
  std::string run;
  uint32_t version = 0;
  ObjectId digest;
  // Provenance (DESIGN.md §2), copied from the release and the daemon at start.
  std::string feature;
  std::string source_ref;
  std::string host;
  int64_t started_at = 0;
  int64_t started_ms = 0;  // for duration_s; not shown
  uint32_t started_by = 0;
  std::string status = "running";  // running | succeeded | failed | cancelled | timed_out
  int64_t finished_at = 0;
  double duration_s = 0;
  int64_t exit_code = 0;
  int64_t oom_retries = 0;
  std::string note;
  bool sealed() const { return status != "running"; }
};

struct RunResult {
  std::string status;
  int64_t exit_code = 0;
  int64_t oom_retries = 0;
  std::string note;
  // Parses the JSON a runner writes to runs/RUN/result.
  static Result<RunResult> FromJson(std::string_view text);
};

nlohmann::json ToJson(const HookInfo&);
nlohmann::json ToJson(const ReleaseInfo&);
nlohmann::json ToJson(const PointerMove&);
nlohmann::json ToJson(const RunInfo&);
std::string FormatTime(int64_t unix_seconds);  // 2026-11-21T05:37:43Z
// JSON text that never throws: bytes that are not UTF-8 (a pack's message,
// source_ref, or names quoted in an error) become U+FFFD. Every record and
// journal line the ledger writes goes through it.
std::string DumpJson(const nlohmann::json& j, int indent = -1);
// The same document with every string made valid UTF-8, so that a caller's
// plain dump() cannot throw (ApplyReport::ToJson returns one).
nlohmann::json SafeJson(const nlohmann::json& j);
int64_t NowMs();
std::string HostName();  // gethostname(2), "localhost" if it fails

Status ValidateRunName(std::string_view run);  // [A-Za-z0-9._-]{1,64}
Status ValidateTagName(std::string_view tag);  // like a hook name

class Ledger {
 public:
  explicit Ledger(Store* store) : store_(store) {}

  Result<std::vector<HookInfo>> ListHooks() const;
  Result<HookInfo> GetHook(std::string_view hook) const;
  Result<std::vector<ReleaseInfo>> ListReleases(std::string_view hook) const;
  Result<ReleaseInfo> GetRelease(std::string_view hook, uint32_t version) const;
  // nullopt while the hook has no live release.
  Result<std::optional<uint32_t>> GetLive(std::string_view hook) const;
  Result<std::map<std::string, uint32_t>> ListTags(std::string_view hook) const;
  Result<std::vector<PointerMove>> History(std::string_view hook) const;

  // Moves live to an existing release of the hook; InvalidArgument (and no
  // change) otherwise. Recorded in history and the journal.
  Status MoveLive(std::string_view hook, uint32_t version, const Actor& who);
  Status SetTag(std::string_view hook, std::string_view tag, uint32_t version, const Actor& who);
  Status RemoveTag(std::string_view hook, std::string_view tag, const Actor& who);

  // Pins the run to the release live points to now; NotFound if the hook has
  // no live release, Exists if the run name is taken. `host` goes in
  // run.json (empty: this machine's hostname).
  Result<RunInfo> StartRun(std::string_view hook, std::string_view run, const Actor& who,
                           std::string_view host = {});
  // Seals the run. NotPermitted if it is already sealed.
  Result<RunInfo> FinishRun(std::string_view hook, std::string_view run, const RunResult& result,
                            const Actor& who);
  Result<RunInfo> GetRun(std::string_view hook, std::string_view run) const;
  Result<std::vector<RunInfo>> ListRuns(std::string_view hook) const;

  // Journal lines with seq >= from, in order, until `fn` returns false.
  Status ReadJournal(uint64_t from, const std::function<bool(uint64_t seq, std::string_view line)>& fn) const;

  Store* store() const { return store_; }

 private:
  Store* store_;
};

// Helpers that run inside a caller's write txn (apply uses them for the
// release commit, so that releases, pointers and journal land together).
namespace ledger_txn {
std::string ReleaseKey(std::string_view hook, uint32_t version);
std::string HookPrefix(std::string_view hook);  // name \0
Result<std::optional<HookInfo>> GetHook(const Tables& t, const lmdb::Txn& txn, std::string_view hook);
Status PutHook(const Tables& t, lmdb::Txn& txn, const HookInfo& h);
Result<uint32_t> LastVersion(const Tables& t, const lmdb::Txn& txn, std::string_view hook);
Result<std::optional<uint32_t>> FindDigest(const Tables& t, const lmdb::Txn& txn, std::string_view hook,
                                           const ObjectId& digest);
Status PutRelease(const Tables& t, lmdb::Txn& txn, const ReleaseInfo& r);
Result<std::optional<uint32_t>> GetPointer(const Tables& t, const lmdb::Txn& txn, std::string_view hook,
                                           std::string_view pointer);
// Sets (to != 0) or removes (to == 0) a pointer, with its history line and
// journal event.
Status MovePointer(const Tables& t, lmdb::Txn& txn, std::string_view hook, std::string_view pointer,
                   uint32_t to, const Actor& who, int64_t now);
Status AppendJournal(const Tables& t, lmdb::Txn& txn, const nlohmann::json& event);
// Decoders of the stored records (Corruption when a record does not decode);
// fsck and gc read the tables directly with them.
Result<HookInfo> DecodeHookRecord(std::string_view bytes);
Result<ReleaseInfo> DecodeReleaseRecord(std::string_view bytes);
Result<PointerMove> DecodeHistoryRecord(std::string_view bytes);
Result<RunInfo> DecodeRunRecord(std::string_view bytes);
}  // namespace ledger_txn

}  // namespace hookfs
