#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <spdlog/spdlog.h>

#include "hookfs/hash.h"
#include "hookfs/store.h"

namespace hookfs {

std::string PendingBlobKey(const ObjectId& id, std::string_view session) {
  std::string k(id.AsKey());
  k += session;
  return k;
}
std::string PendingSessionKey(std::string_view session, const ObjectId& id) {
  std::string k(session);
  k.append(id.AsKey());
  return k;
}
std::string SessionName(uint64_t writer) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)writer);
  return hex;
}

Result<bool> BlobPending(const Tables& t, const lmdb::Txn& txn, const ObjectId& id) {
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Cursor p, lmdb::Cursor::Open(txn, t.pending_blob));
  HOOKFS_ASSIGN_OR_RETURN(bool found, p.Seek(id.AsKey()));
  return found && p.key().substr(0, ObjectId::kSize) == id.AsKey();
}

Result<uint64_t> DeleteAllChunks(const Tables& t, lmdb::Txn& txn, const ObjectId& id) {
  std::vector<std::string> keys;
  {
    HOOKFS_ASSIGN_OR_RETURN(lmdb::Cursor c, lmdb::Cursor::Open(txn, t.chunks));
    HOOKFS_ASSIGN_OR_RETURN(bool more, c.Seek(id.AsKey()));
    while (more && c.key().substr(0, ObjectId::kSize) == id.AsKey()) {
      keys.emplace_back(c.key());
      HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
    }
  }
  for (const std::string& k : keys) HOOKFS_RETURN_IF_ERROR(txn.Del(t.chunks, k));
  return uint64_t(keys.size());
}

uint64_t SessionWriter(std::string_view session) {
  uint64_t w = 0;
  for (char c : session) w = w << 4 | uint64_t(c <= '9' ? c - '0' : c - 'a' + 10);
  return w;
}

Status ReclaimSession(const Tables& t, lmdb::Txn& txn, std::string_view session) {
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Cursor c, lmdb::Cursor::Open(txn, t.pending_session));
  std::vector<std::pair<ObjectId, uint32_t>> mine;
  HOOKFS_ASSIGN_OR_RETURN(bool more, c.Seek(session));
  while (more && c.key().size() == session.size() + ObjectId::kSize && c.key().substr(0, session.size()) == session) {
    if (c.value().size() != 4) return Status::Corruption("pending record of session " + std::string(session));
    mine.emplace_back(ObjectId::FromBytes(c.key().data() + session.size()), lmdb::GetBE32(c.value().data()));
    HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
  }
  const uint64_t writer = SessionWriter(session);
  for (const auto& [id, chunks] : mine) {
    HOOKFS_RETURN_IF_ERROR(txn.Del(t.pending_session, PendingSessionKey(session, id)));
    HOOKFS_RETURN_IF_ERROR(txn.Del(t.pending_blob, PendingBlobKey(id, session)));
    auto rec = txn.Get(t.blobs, id.AsKey());
    if (rec.ok()) {
      auto info = DecodeBlobInfo(*rec);
      if (info.ok() && info->writer == writer) continue;  // committed: the record uses these chunks
    } else if (!rec.status().Is(Code::kNotFound)) {
      return rec.status();
    }
    // Keyed by this session's writer tag: nobody else's bytes are touched.
    for (uint32_t i = 0; i < chunks; ++i) HOOKFS_RETURN_IF_ERROR(txn.Del(t.chunks, ChunkKey(id, writer, i)));
  }
  return Status::OK();
}

Result<std::unique_ptr<ChunkSession>> ChunkSession::Begin(Store* store) {
  unsigned char rnd[8];
  if (::getrandom(rnd, sizeof rnd, 0) != sizeof rnd) return Status::FromErrno(errno, "getrandom");
  char id[17];
  for (int i = 0; i < 8; ++i) std::snprintf(id + 2 * i, 3, "%02x", rnd[i]);
  HOOKFS_ASSIGN_OR_RETURN(int fd, store->CreateStagingFile(std::string("session-") + id + ".lock"));
  return std::unique_ptr<ChunkSession>(new ChunkSession(store, id, SessionWriter(id), fd));
}

ChunkSession::~ChunkSession() {
  if (!done_) {
    Status st = Abort();
    if (!st.ok()) spdlog::warn("apply session {}: reclaim failed ({}); the next open reclaims it", id_, st.ToString());
  }
  CloseLock();
}

void ChunkSession::CloseLock() {
  if (lock_fd_ < 0) return;
  ::unlink((store_->staging_dir() + "/session-" + id_ + ".lock").c_str());
  ::close(lock_fd_);
  lock_fd_ = -1;
}

Result<bool> ChunkSession::BeginBlob(const ObjectId& id, uint64_t size) {
  {
    HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
    auto rec = view.txn().Get(store_->tables().blobs, id.AsKey());
    if (rec.ok()) {
      auto info = DecodeBlobInfo(*rec);
      // An intact stored copy is the one releases use; a quarantined (or
      // undecodable) one is rewritten from the pack, healing it.
      if (info.ok() && !(info->flags & kBlobQuarantined)) return false;
    } else if (!rec.status().Is(Code::kNotFound)) {
      return rec.status();
    }
  }
  if (regs_.size() + chunks_.size() >= kBatchRecords) HOOKFS_RETURN_IF_ERROR(Flush());
  regs_.emplace_back(id, ChunkCount(size));
  return true;
}

Status ChunkSession::PutChunk(const ObjectId& id, uint32_t index, const void* data, size_t len) {
  HOOKFS_RETURN_IF_ERROR(store_->Inject("chunk"));
  if (!chunks_.empty() && (arena_.size() + len > kBatchBytes || regs_.size() + chunks_.size() >= kBatchRecords))
    HOOKFS_RETURN_IF_ERROR(Flush());
  if (arena_.capacity() < kBatchBytes) arena_.reserve(kBatchBytes);
  const size_t at = arena_.size();
  arena_.insert(arena_.end(), static_cast<const char*>(data), static_cast<const char*>(data) + len);
  chunks_.push_back({ChunkKey(id, writer_, index), at, len});
  return Status::OK();
}

Status ChunkSession::Flush() {
  if (regs_.empty() && chunks_.empty()) return Status::OK();
  HOOKFS_RETURN_IF_ERROR(store_->Inject("chunk_commit"));
  const Tables& t = store_->tables();
  // The write lock is taken here, with every byte already in memory.
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, store_->BeginWrite());
  // Registrations first: every durable chunk has an owner on record.
  for (const auto& [id, chunks] : regs_) {
    std::string v;
    lmdb::PutBE32(&v, chunks);
    HOOKFS_RETURN_IF_ERROR(txn.Put(t.pending_session, PendingSessionKey(id_, id), v));
    HOOKFS_RETURN_IF_ERROR(txn.Put(t.pending_blob, PendingBlobKey(id, id_), ""));
  }
  for (const QueuedChunk& c : chunks_) {
    HOOKFS_ASSIGN_OR_RETURN(char* dst, txn.Reserve(t.chunks, c.key, c.len));
    std::memcpy(dst, arena_.data() + c.at, c.len);
  }
  HOOKFS_RETURN_IF_ERROR(txn.Commit().Context("commit chunk batch"));
  chunks_written_ += chunks_.size();
  regs_.clear();
  chunks_.clear();
  arena_.clear();
  return Status::OK();
}

Status ChunkSession::Release(lmdb::Txn& txn) {
  // Blob records written earlier in `txn` keep their chunks; chunks of blobs
  // that ended up unused (a release turned duplicate meanwhile) go.
  return ReclaimSession(store_->tables(), txn, id_);
}

void ChunkSession::Committed() {
  done_ = true;
  CloseLock();
}

Status ChunkSession::Abort() {
  if (done_) return Status::OK();
  done_ = true;
  regs_.clear();  // queued, never written
  chunks_.clear();
  arena_.clear();
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, store_->BeginWrite());
  HOOKFS_RETURN_IF_ERROR(ReclaimSession(store_->tables(), txn, id_));
  HOOKFS_RETURN_IF_ERROR(txn.Commit().Context("reclaim session " + id_));
  CloseLock();
  return Status::OK();
}

}  // namespace hookfs
