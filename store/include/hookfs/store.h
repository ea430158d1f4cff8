// Store: the LMDB environment that holds objects and the ledger.
//
// A store directory holds data.mdb and lock.mdb (one LMDB environment) and
// staging/ (pack spool files and chunk-session locks). Objects:
//   blobs   id -> BlobRecord (size, chunk size, flags, writer, XXH3-64 per chunk)
//   chunks  id ++ u64be writer ++ u32be index -> raw bytes (kChunkSize, the
//           last one shorter). `writer` is the chunk session that streamed
//           them; the blob record names the one whose chunks it uses, so two
//           applies streaming the same blob at once never touch each
//           other's bytes (a poisoned copy cannot overwrite a good one).
//   trees   id -> u64 XXH3-64 ++ canonical tree bytes
// A blob record is written only in the same txn that commits a release
// reaching it, after all of its chunks are durable; so a blob record implies
// a complete, verified blob. Chunks written before that are registered under
// a chunk session (pending tables) and reclaimed if the session aborts or its
// process dies (found by a free flock on staging/session-ID.lock at Open).
//
// The store's own format version lives in the `meta` table; Open refuses a
// store of another version with a message naming both, before any write.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hookfs/env.h"
#include "hookfs/lmdb.h"
#include "hookfs/object_id.h"
#include "hookfs/status.h"
#include "hookfs/tree.h"

namespace hookfs {

inline constexpr uint32_t kStoreFormatVersion = 1;
inline constexpr size_t kChunkSize = 256 * 1024;
// BlobInfo.flags: set by `hookctl fsck --repair` on a blob whose stored copy
// is damaged; cleared when a later pack carrying the blob heals it.
inline constexpr uint32_t kBlobQuarantined = 1;

struct StoreOptions {
  std::string dir;
  // Maximum size of data.mdb. Costs only address space (no MDB_WRITEMAP).
  uint64_t map_size = 1ull << 40;
  unsigned max_readers = 1024;
  bool create_if_missing = true;
  // Every Store holds a flock on STORE/repair.lock: shared normally, exclusive
  // with this set (fsck --repair). An exclusive open fails with Busy while any
  // other process (the daemon, hookctl apply) has the store open, and a shared
  // open fails with Busy while a repair runs. docs/integrity.md.
  bool exclusive = false;
  // Test hook: called before each write step of an apply ("chunk",
  // "chunk_commit", "decided" (after phase 2, before the final txn begins),
  // "final_commit"), of gc ("gc_sweep", between mark and sweep) and of fsck
  // --repair ("repair_digests", before the digest rebuild commits); a non-OK
  // result is that step's failure.
  std::function<Status(std::string_view step)> fault_injector;
  // File I/O on staging files (tests inject faults through it); null is
  // Env::Default(). Must outlive the Store.
  Env* env = nullptr;
};

// The named tables of the environment. Ledger tables are described in
// ledger/include/hookfs/ledger.h.
struct Tables {
  MDB_dbi meta = 0, blobs = 0, chunks = 0, trees = 0;
  MDB_dbi pending_session = 0, pending_blob = 0;
  MDB_dbi hooks = 0, releases = 0, digests = 0, pointers = 0, history = 0,
          runs = 0, journal = 0;
  // 't'|'b' ++ id -> JSON {reason, releases}: objects fsck --repair found
  // damaged or missing (docs/integrity.md). Usually empty.
  MDB_dbi quarantine = 0;
  // name \0 u32be version -> the release's file modification times
  // (ledger/include/hookfs/release_times.h). Absent: the files show the
  // release's commit time.
  MDB_dbi times = 0;
  // name -> JSON KeyInfo; u64be seq -> JSON key event (ledger/keys.h).
  MDB_dbi keys = 0, key_history = 0;
};

struct BlobInfo {
  uint64_t size = 0;
  uint32_t chunk_count = 0;
  uint32_t flags = 0;
  uint64_t writer = 0;  // the chunk session whose chunks hold the content
};

std::string ChunkKey(const ObjectId& id, uint64_t writer, uint32_t index);
inline constexpr size_t kChunkKeySize = ObjectId::kSize + 8 + 4;
inline constexpr size_t kBlobRecordHeader = 24;  // then u64be XXH3 per chunk
uint32_t ChunkCount(uint64_t size);
std::string EncodeBlobRecord(uint64_t size, uint64_t writer, const std::vector<uint64_t>& chunk_xxh3);
Result<BlobInfo> DecodeBlobInfo(std::string_view rec);
// The record `rec` with its flags word replaced (rec must be >= 16 bytes).
std::string WithBlobFlags(std::string_view rec, uint32_t flags);
// Key of an object in the quarantine table: kind 'b' (blob) or 't' (tree).
std::string QuarantineKey(char kind, const ObjectId& id);

// ---- Record layouts: defined here only; apply, fsck and gc use these. ----
// Tree record: u64be XXH3-64 of the canonical bytes ++ the canonical bytes.
std::string EncodeTreeRecord(std::string_view canonical);
// The canonical bytes of a tree record; Corruption ("record too short",
// "checksum mismatch") when the record does not check. Not decoded.
Result<std::string_view> TreeRecordBytes(std::string_view rec);
// The XXH3-64 a blob record lists for chunk `index` (the record must have
// passed DecodeBlobInfo and index < chunk_count).
uint64_t BlobRecordChunkXxh3(std::string_view rec, uint32_t index);
// Pending-chunk registrations of a chunk session (16 hex digits):
//   pending_blob     id ++ session -> ""  (who is writing blob id)
//   pending_session  session ++ id -> u32be chunk count  (what to reclaim)
std::string PendingBlobKey(const ObjectId& id, std::string_view session);
std::string PendingSessionKey(std::string_view session, const ObjectId& id);
// The session name of a chunk writer tag (inverse of SessionWriter).
std::string SessionName(uint64_t writer);

class Store;

// Keeps memory freed after each chunk batch in the heap instead of handing
// it back to the kernel (glibc trims the heap top past 128 KiB and serves
// LMDB's 260 KiB overflow pages from mmap): re-faulting 64 MiB of fresh pages
// per batch doubled apply time on VMs. At most 128 MiB stays retained, so
// memory is still bounded. Call once from main(), before any thread starts.
void TuneAllocatorForApply();

// A consistent snapshot for one request: a read txn. Views it hands out
// point into the map and are valid until the ReadView is destroyed.
class ReadView {
 public:
  ReadView(ReadView&&) = default;
  ReadView& operator=(ReadView&&) = default;

  Result<bool> HasBlob(const ObjectId& id) const;
  Result<bool> HasTree(const ObjectId& id) const;
  Result<BlobInfo> GetBlobInfo(const ObjectId& id) const;
  // Canonical bytes, checked against the stored XXH3 (Corruption if not).
  Result<std::string_view> GetTreeBytes(const ObjectId& id) const;
  Result<Tree> GetTree(const ObjectId& id) const;
  // Appends views of bytes [offset, offset+len) of the blob, clipped at its
  // end, to `out`. Each chunk touched is checked against its XXH3 first: a
  // mismatch is Corruption naming blob and chunk, and nothing is appended.
  Status ReadBlob(const ObjectId& id, uint64_t offset, size_t len,
                  std::vector<std::span<const uint8_t>>* out) const;

  // Whether fsck --repair quarantined the object ('b' blob, 't' tree).
  Result<bool> IsQuarantined(char kind, const ObjectId& id) const;
  // True when the quarantine table has any entry (a damaged store).
  Result<bool> AnyQuarantined() const;

  const lmdb::Txn& txn() const { return txn_; }
  const Tables& tables() const { return *tables_; }

 private:
  friend class Store;
  ReadView(lmdb::Txn txn, const Tables* t) : txn_(std::move(txn)), tables_(t) {}
  lmdb::Txn txn_;
  const Tables* tables_;
};

class Store {
 public:
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // --store default: $HOOKFS_STORE, else /var/lib/hookfs as root, else
  // ${XDG_DATA_HOME:-~/.local/share}/hookfs.
  static std::string DefaultDir();

  const std::string& dir() const { return options_.dir; }
  std::string staging_dir() const { return options_.dir + "/staging"; }
  MDB_env* env() const { return env_; }
  const Tables& tables() const { return tables_; }
  // Opened with StoreOptions::exclusive (no other process has it open).
  bool exclusive() const { return options_.exclusive; }

  Result<ReadView> Read() const;

  // Visits every record of `dbi` in key order, `batch` records per short
  // read txn, on copies: `fn` may open txns of its own, and no snapshot is
  // held for long (a long reader pins old pages and grows the file).
  // `values` false hands `fn` empty values.
  Status ScanTable(MDB_dbi dbi, bool values, size_t batch,
                   const std::function<Status(const std::string& key, const std::string& value)>& fn) const;
  Result<lmdb::Txn> BeginWrite() const { return lmdb::Txn::Begin(env_, true); }

  // Creates staging/NAME (O_EXCL) already holding an exclusive flock, so that
  // the sweep at Open never takes a live file for an abandoned one: an
  // O_TMPFILE locked before it is linked, or (where O_TMPFILE is missing) a
  // file re-checked after the lock to still be the one at NAME (the sweep
  // may have unlinked it between create and lock; then it is made again).
  // The file stays the caller's while the returned fd is open.
  Result<int> CreateStagingFile(const std::string& name) const;

  // The Env for staging-file I/O.
  Env* io() const { return options_.env ? options_.env : Env::Default(); }

  // Runs the test fault injector, if any, for `step`.
  Status Inject(std::string_view step) const;

  // Reclaims chunks of chunk sessions whose owner is gone. Open calls it.
  Status ReclaimAbandoned();

 private:
  explicit Store(StoreOptions options) : options_(std::move(options)) {}
  Status OpenEnv();
  Status CheckOrInitFormat();
  Status LockStore();

  StoreOptions options_;
  MDB_env* env_ = nullptr;
  int lock_fd_ = -1;  // STORE/repair.lock, flock'd shared (or exclusive)
  Tables tables_;
};

// Chunks of blobs being applied, collected in memory and written in bounded
// batches, each its own short write txn that holds the write lock only for
// the copy into the map and the commit, never while pack bytes are read
// (issue 8a). They are registered as pending under this session until the
// final txn publishes them (Release) or the session reclaims them (Abort, the
// destructor, or the next Open after a crash).
class ChunkSession {
 public:
  static Result<std::unique_ptr<ChunkSession>> Begin(Store* store);
  ~ChunkSession();

  // Starts blob `id` of `size` bytes. False (and nothing to write) when the
  // store already has the blob intact (checked in a read txn); a quarantined
  // blob counts as absent (its chunks are rewritten, healing it). Otherwise
  // the blob is registered as this session's, in the batch that carries its
  // first chunk (or an earlier one).
  Result<bool> BeginBlob(const ObjectId& id, uint64_t size);
  // Queues chunk `index` of the blob begun last (kChunkSize bytes, the last
  // one shorter). A batch is written when it holds kBatchBytes or
  // kBatchRecords.
  Status PutChunk(const ObjectId& id, uint32_t index, const void* data, size_t len);
  // Writes the queued batch so that every chunk queued so far is durable.
  Status Flush();
  // In the caller's final txn, after it wrote the blob records: drop this
  // session's registrations and the chunks of any blob left without a record.
  Status Release(lmdb::Txn& txn);
  // After the final txn committed: the session is over, nothing to reclaim.
  void Committed();
  // Deletes this session's chunks that no blob record and no other session
  // needs. Idempotent.
  Status Abort();

  uint64_t chunks_written() const { return chunks_written_; }
  uint64_t writer() const { return writer_; }
  const std::string& id() const { return id_; }

  // Bounds of one batch txn: the longest any other writer waits for us.
  static constexpr uint64_t kBatchBytes = 16ull << 20;
  static constexpr size_t kBatchRecords = 4096;

 private:
  ChunkSession(Store* s, std::string id, uint64_t writer, int lock_fd)
      : store_(s), id_(std::move(id)), writer_(writer), lock_fd_(lock_fd) {}
  void CloseLock();

  struct QueuedChunk {
    std::string key;
    size_t at, len;  // in arena_
  };
  Store* store_;
  std::string id_;    // 16 hex digits of writer_
  uint64_t writer_;
  int lock_fd_;
  std::vector<std::pair<ObjectId, uint32_t>> regs_;  // queued registrations
  std::vector<QueuedChunk> chunks_;
  std::vector<char> arena_;
  uint64_t chunks_written_ = 0;
  bool done_ = false;
};

// True if some chunk session (an apply in flight) has blob `id` registered.
Result<bool> BlobPending(const Tables& t, const lmdb::Txn& txn, const ObjectId& id);
// Deletes every chunk of blob `id`, whatever its writer; returns how many.
Result<uint64_t> DeleteAllChunks(const Tables& t, lmdb::Txn& txn, const ObjectId& id);

// A session id (16 hex digits) as the writer tag of its chunk keys.
uint64_t SessionWriter(std::string_view session);
// Reclaims one session's chunks inside `txn` (shared by Abort and recovery):
// all of them but those a blob record names as its content.
Status ReclaimSession(const Tables& t, lmdb::Txn& txn, std::string_view session);

}  // namespace hookfs
