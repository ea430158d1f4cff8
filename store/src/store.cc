#include "hookfs/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <set>

#include <spdlog/spdlog.h>

#include "hookfs/hash.h"

namespace hookfs {

namespace {
constexpr std::string_view kFormatKey = "format_version";

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0750) == 0 || errno == EEXIST) return Status::OK();
  return Status::FromErrno(errno, "mkdir " + path);
}
}  // namespace

void TuneAllocatorForApply() {
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

std::string ChunkKey(const ObjectId& id, uint64_t writer, uint32_t index) {
  std::string k(id.AsKey());
  lmdb::PutBE64(&k, writer);
  lmdb::PutBE32(&k, index);
  return k;
}

uint32_t ChunkCount(uint64_t size) { return uint32_t((size + kChunkSize - 1) / kChunkSize); }

// BlobRecord := u64be size | u32be chunk_size | u32be flags | u64be writer
//               | u64be xxh3[chunks]
std::string EncodeBlobRecord(uint64_t size, uint64_t writer, const std::vector<uint64_t>& chunk_xxh3) {
  std::string r;
  lmdb::PutBE64(&r, size);
  lmdb::PutBE32(&r, uint32_t(kChunkSize));
  lmdb::PutBE32(&r, 0);
  lmdb::PutBE64(&r, writer);
  for (uint64_t h : chunk_xxh3) lmdb::PutBE64(&r, h);
  return r;
}

std::string WithBlobFlags(std::string_view rec, uint32_t flags) {
  std::string r(rec);
  std::string f;
  lmdb::PutBE32(&f, flags);
  r.replace(12, 4, f);
  return r;
}

std::string QuarantineKey(char kind, const ObjectId& id) {
  std::string k(1, kind);
  k.append(id.AsKey());
  return k;
}

std::string EncodeTreeRecord(std::string_view canonical) {
  std::string rec;
  lmdb::PutBE64(&rec, Xxh3_64(canonical.data(), canonical.size()));
  rec += canonical;
  return rec;
}

Result<std::string_view> TreeRecordBytes(std::string_view rec) {
  if (rec.size() < 8) return Status::Corruption("record too short");
  std::string_view bytes = rec.substr(8);
  if (Xxh3_64(bytes.data(), bytes.size()) != lmdb::GetBE64(rec.data())) return Status::Corruption("checksum mismatch");
  return bytes;
}

uint64_t BlobRecordChunkXxh3(std::string_view rec, uint32_t index) {
  return lmdb::GetBE64(rec.data() + kBlobRecordHeader + 8ull * index);
}

Result<BlobInfo> DecodeBlobInfo(std::string_view rec) {
  if (rec.size() < kBlobRecordHeader) return Status::Corruption("blob record too short");
  BlobInfo info;
  info.size = lmdb::GetBE64(rec.data());
  if (lmdb::GetBE32(rec.data() + 8) != kChunkSize) return Status::Corruption("blob record has a foreign chunk size");
  info.flags = lmdb::GetBE32(rec.data() + 12);
  info.writer = lmdb::GetBE64(rec.data() + 16);
  info.chunk_count = ChunkCount(info.size);
  if (rec.size() != kBlobRecordHeader + 8ull * info.chunk_count) return Status::Corruption("blob record length does not match its size");
  return info;
}

// ---- ReadView ----------------------------------------------------------------

Result<bool> ReadView::HasBlob(const ObjectId& id) const { return txn_.Has(tables_->blobs, id.AsKey()); }
Result<bool> ReadView::HasTree(const ObjectId& id) const { return txn_.Has(tables_->trees, id.AsKey()); }

Result<bool> ReadView::IsQuarantined(char kind, const ObjectId& id) const {
  return txn_.Has(tables_->quarantine, QuarantineKey(kind, id));
}

Result<bool> ReadView::AnyQuarantined() const {
  MDB_stat st;
  int rc = mdb_stat(txn_.get(), tables_->quarantine, &st);
  if (rc != MDB_SUCCESS) return lmdb::LmdbStatus(rc, "stat quarantine");
  return st.ms_entries > 0;
}

Result<BlobInfo> ReadView::GetBlobInfo(const ObjectId& id) const {
  auto rec = txn_.Get(tables_->blobs, id.AsKey());
  if (!rec.ok()) return rec.status().Context("blob " + id.Hex());
  auto info = DecodeBlobInfo(*rec);
  if (!info.ok()) return info.status().Context("blob " + id.Hex());
  return info;
}

Result<std::string_view> ReadView::GetTreeBytes(const ObjectId& id) const {
  auto rec = txn_.Get(tables_->trees, id.AsKey());
  if (!rec.ok()) return rec.status().Context("tree " + id.Hex());
  auto bytes = TreeRecordBytes(*rec);
  if (!bytes.ok()) return Status::Corruption("tree " + id.Hex() + ": " + bytes.status().message());
  return bytes;
}

Result<Tree> ReadView::GetTree(const ObjectId& id) const {
  HOOKFS_ASSIGN_OR_RETURN(std::string_view bytes, GetTreeBytes(id));
  auto tree = DecodeTree(bytes);
  if (!tree.ok()) return Status::Corruption("tree " + id.Hex() + ": " + tree.status().message());
  return tree;
}

Status ReadView::ReadBlob(const ObjectId& id, uint64_t offset, size_t len,
                          std::vector<std::span<const uint8_t>>* out) const {
  auto rec = txn_.Get(tables_->blobs, id.AsKey());
  if (!rec.ok()) return rec.status().Context("blob " + id.Hex());
  HOOKFS_ASSIGN_OR_RETURN(BlobInfo info, DecodeBlobInfo(*rec));
  if (offset >= info.size || len == 0) return Status::OK();
  uint64_t end = std::min<uint64_t>(info.size, offset + len);
  size_t first_out = out->size();
  for (uint64_t idx = offset / kChunkSize; idx * kChunkSize < end; ++idx) {
    uint64_t chunk_start = idx * kChunkSize;
    size_t chunk_len = size_t(std::min<uint64_t>(kChunkSize, info.size - chunk_start));
    auto chunk = txn_.Get(tables_->chunks, ChunkKey(id, info.writer, uint32_t(idx)));
    Status st;
    if (!chunk.ok()) {
      st = chunk.status().Is(Code::kNotFound) ? Status::Corruption("chunk missing") : chunk.status();
    } else if (chunk->size() != chunk_len) {
      st = Status::Corruption("chunk has " + std::to_string(chunk->size()) + " bytes, expected " +
                              std::to_string(chunk_len));
    } else if (Xxh3_64(chunk->data(), chunk->size()) != BlobRecordChunkXxh3(*rec, uint32_t(idx))) {
      st = Status::Corruption("checksum mismatch");
    }
    if (!st.ok()) {
      out->resize(first_out);
      return st.Context("blob " + id.Hex() + " chunk " + std::to_string(idx));
    }
    uint64_t from = std::max(offset, chunk_start), to = std::min(end, chunk_start + chunk_len);
    out->emplace_back(reinterpret_cast<const uint8_t*>(chunk->data()) + (from - chunk_start), size_t(to - from));
  }
  return Status::OK();
}

// ---- Store -------------------------------------------------------------------

std::string Store::DefaultDir() {
  if (const char* s = std::getenv("HOOKFS_STORE"); s && *s) return s;
  if (::geteuid() == 0) return "/var/lib/hookfs";
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return std::string(x) + "/hookfs";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.local/share/hookfs";
}

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.dir.empty()) return Status::InvalidArgument("no store directory given");
  std::unique_ptr<Store> s(new Store(options));
  HOOKFS_RETURN_IF_ERROR(s->OpenEnv());
  HOOKFS_RETURN_IF_ERROR(s->CheckOrInitFormat());
  HOOKFS_RETURN_IF_ERROR(MakeDir(s->staging_dir()));
  // Reader slots of dead processes pin old pages (the file only grows).
  int dead = 0;
  if (int rc = mdb_reader_check(s->env_, &dead); rc != MDB_SUCCESS)
    return lmdb::LmdbStatus(rc, "check readers of store " + options.dir);
  if (dead > 0) spdlog::info("cleared {} reader slots of dead processes in {}", dead, options.dir);
  HOOKFS_RETURN_IF_ERROR(s->ReclaimAbandoned());
  return s;
}

Store::~Store() {
  if (env_) mdb_env_close(env_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

// Shared for every user of the store, exclusive for a repair: a repair never
// runs while the daemon or an apply has the store open, and nothing opens the
// store while a repair runs.
Status Store::LockStore() {
  const std::string path = options_.dir + "/repair.lock";
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (lock_fd_ < 0) return Status::FromErrno(errno, "open " + path);
  if (::flock(lock_fd_, (options_.exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) return Status::OK();
  int err = errno;
  if (err != EWOULDBLOCK) return Status::FromErrno(err, "lock " + path);
  if (options_.exclusive)
    return Status::Busy("store " + options_.dir +
                        " is open in another process (a mounted hookfs or a running hookctl); unmount it "
                        "and retry the repair");
  return Status::Busy("store " + options_.dir + " is being repaired (hookctl fsck --repair); retry when it is done");
}

Status Store::OpenEnv() {
  const std::string& dir = options_.dir;
  struct stat st;
  bool exists = ::stat((dir + "/data.mdb").c_str(), &st) == 0;
  if (!exists) {
    if (!options_.create_if_missing) return Status::NotFound("no hookfs store at " + dir);
    if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) return Status::FromErrno(errno, "create store " + dir);
  }
  // Before the environment opens: a refused open never touches LMDB's own
  // locks (opening one environment twice in a process would).
  HOOKFS_RETURN_IF_ERROR(LockStore());
  int rc = mdb_env_create(&env_);
  if (rc != MDB_SUCCESS) return lmdb::LmdbStatus(rc, "create environment");
  // A refused setting (a map size the platform cannot address, say) is an
  // error here, not a surprise at the first big write.
  rc = mdb_env_set_maxreaders(env_, options_.max_readers);
  if (rc == MDB_SUCCESS) rc = mdb_env_set_maxdbs(env_, 32);
  if (rc == MDB_SUCCESS) rc = mdb_env_set_mapsize(env_, options_.map_size);
  if (rc != MDB_SUCCESS) {
    mdb_env_close(env_);
    env_ = nullptr;
    return lmdb::LmdbStatus(rc, "configure store " + dir);
  }
  // MDB_NOTLS: a reader slot belongs to its txn, so FUSE worker threads may
  // hold a read txn while a write txn runs on the same thread.
  rc = mdb_env_open(env_, dir.c_str(), MDB_NOTLS, 0640);
  if (rc != MDB_SUCCESS) {
    mdb_env_close(env_);
    env_ = nullptr;
    return lmdb::LmdbStatus(rc, "open store " + dir);
  }
  return Status::OK();
}

// Reads the format version before anything can write; initialises only an
// empty environment.
Status Store::CheckOrInitFormat() {
  const std::string where = "store " + options_.dir;
  {
    HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, lmdb::Txn::Begin(env_, false));
    MDB_dbi meta;
    int rc = mdb_dbi_open(txn.get(), "meta", 0, &meta);
    if (rc == MDB_SUCCESS) {
      auto v = txn.Get(meta, kFormatKey);
      if (!v.ok() || v->size() != 4)
        return Status::Unsupported(where + " has no readable format version; refusing to open it");
      uint32_t version = lmdb::GetBE32(v->data());
      if (version != kStoreFormatVersion)
        return Status::Unsupported(where + " has format version " + std::to_string(version) +
                                   "; this hookfs supports version " + std::to_string(kStoreFormatVersion) +
                                   " only; not opened, nothing written");
    } else if (rc == MDB_NOTFOUND) {
      // A fresh environment has an empty main table; anything else is foreign.
      MDB_dbi main;
      HOOKFS_RETURN_IF_ERROR(lmdb::LmdbStatus(mdb_dbi_open(txn.get(), nullptr, 0, &main), where));
      HOOKFS_ASSIGN_OR_RETURN(lmdb::Cursor c, lmdb::Cursor::Open(txn, main));
      HOOKFS_ASSIGN_OR_RETURN(bool any, c.First());
      if (any) return Status::Unsupported(where + " is an LMDB environment but not a hookfs store; refusing it");
    } else {
      return lmdb::LmdbStatus(rc, where);
    }
  }
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, lmdb::Txn::Begin(env_, true));
  struct Named { const char* name; MDB_dbi* dbi; };
  const Named all[] = {
      {"meta", &tables_.meta},         {"blobs", &tables_.blobs},
      {"chunks", &tables_.chunks},     {"trees", &tables_.trees},
      {"pending_session", &tables_.pending_session}, {"pending_blob", &tables_.pending_blob},
      {"hooks", &tables_.hooks},       {"releases", &tables_.releases},
      {"digests", &tables_.digests},   {"pointers", &tables_.pointers},
      {"history", &tables_.history},   {"runs", &tables_.runs},
      {"journal", &tables_.journal},   {"quarantine", &tables_.quarantine},
      {"times", &tables_.times},
      {"keys", &tables_.keys},         {"key_history", &tables_.key_history},
  };
  for (const Named& n : all)
    HOOKFS_RETURN_IF_ERROR(lmdb::LmdbStatus(mdb_dbi_open(txn.get(), n.name, MDB_CREATE, n.dbi),
                                            std::string("open table ") + n.name));
  HOOKFS_ASSIGN_OR_RETURN(bool has_version, txn.Has(tables_.meta, kFormatKey));
  if (!has_version) {
    std::string v;
    lmdb::PutBE32(&v, kStoreFormatVersion);
    HOOKFS_RETURN_IF_ERROR(txn.Put(tables_.meta, kFormatKey, v));
  }
  return txn.Commit().Context(where);
}

Status Store::ScanTable(MDB_dbi dbi, bool values, size_t batch,
                        const std::function<Status(const std::string&, const std::string&)>& fn) const {
  std::string last;
  bool started = false;
  for (;;) {
    std::vector<std::pair<std::string, std::string>> records;
    {
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, Read());
      HOOKFS_ASSIGN_OR_RETURN(lmdb::Cursor c, lmdb::Cursor::Open(view.txn(), dbi));
      HOOKFS_ASSIGN_OR_RETURN(bool more, started ? c.Seek(last) : c.First());
      if (more && started && c.key() == last) {
        HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
      }
      while (more && records.size() < batch) {
        records.emplace_back(std::string(c.key()), values ? std::string(c.value()) : std::string());
        HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
      }
    }
    if (records.empty()) return Status::OK();
    for (const auto& [k, v] : records) HOOKFS_RETURN_IF_ERROR(fn(k, v));
    last = records.back().first;
    started = true;
  }
}

Result<ReadView> Store::Read() const {
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, lmdb::Txn::Begin(env_, false));
  return ReadView(std::move(txn), &tables_);
}

namespace {
// True when `path` names the file open as `fd` (it was not unlinked or
// replaced meanwhile).
bool StillLinked(int fd, const std::string& path) {
  struct stat a, b;
  return ::fstat(fd, &a) == 0 && a.st_nlink > 0 && ::lstat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}
}  // namespace

Result<int> Store::CreateStagingFile(const std::string& name) const {
  if (name.empty() || name.find('/') != std::string::npos) return Status::InvalidArgument("bad staging name " + name);
  const std::string path = staging_dir() + "/" + name;
  Env* env = io();
  // An anonymous file is locked before it gets a name: no window in which the
  // sweep could lock it first.
  int fd = env->Open(staging_dir().c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) {
    if (env->Flock(fd, LOCK_EX) != 0) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "lock " + path);
    }
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (env->Linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "create " + path);
    }
    return fd;
  }
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) return Status::FromErrno(errno, "create " + path);
  // No O_TMPFILE: between create and lock a sweep may lock and unlink the
  // file. Once we hold the lock no sweep can take it, so a file still linked
  // at `path` after the lock is ours for good; otherwise try again.
  for (int attempt = 0; attempt < 16; ++attempt) {
    fd = env->Open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return Status::FromErrno(errno, "create " + path);
    if (env->Flock(fd, LOCK_EX) != 0) {
      int err = errno;
      ::close(fd);
      env->Unlink(path.c_str());
      return Status::FromErrno(err, "lock " + path);
    }
    if (StillLinked(fd, path)) return fd;
    ::close(fd);  // swept before we locked it: make it again
  }
  return Status::Busy("create " + path + ": removed by concurrent sweeps 16 times");
}

Status Store::Inject(std::string_view step) const {
  if (options_.fault_injector) return options_.fault_injector(step);
  return Status::OK();
}

Status Store::ReclaimAbandoned() {
  // Sessions with pending chunks whose lock nobody holds belong to a dead process.
  std::set<std::string> sessions;
  {
    HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, lmdb::Txn::Begin(env_, false));
    HOOKFS_ASSIGN_OR_RETURN(lmdb::Cursor c, lmdb::Cursor::Open(txn, tables_.pending_session));
    HOOKFS_ASSIGN_OR_RETURN(bool more, c.First());
    while (more) {
      std::string s(c.key().substr(0, c.key().size() - ObjectId::kSize));
      sessions.insert(s);
      std::string next = s;
      next.push_back('\xff');  // skip the rest of this session
      HOOKFS_ASSIGN_OR_RETURN(more, c.Seek(next));
    }
  }
  for (const std::string& s : sessions) {
    std::string lock = staging_dir() + "/session-" + s + ".lock";
    int fd = io()->Open(lock.c_str(), O_RDWR | O_CLOEXEC, 0);
    if (fd >= 0 && io()->Flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);  // its owner is alive
      continue;
    }
    HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, lmdb::Txn::Begin(env_, true));
    HOOKFS_RETURN_IF_ERROR(ReclaimSession(tables_, txn, s));
    HOOKFS_RETURN_IF_ERROR(txn.Commit().Context("reclaim chunk session " + s));
    spdlog::info("reclaimed chunks of abandoned apply session {}", s);
    if (fd >= 0) {
      io()->Unlink(lock.c_str());
      ::close(fd);
    }
  }
  // Spool and lock files in staging/ are flock'd by their owners while live;
  // whatever we can lock is abandoned.
  DIR* d = ::opendir(staging_dir().c_str());
  if (!d) return Status::OK();
  Env* env = io();
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string path = staging_dir() + "/" + name;
    int fd = env->Open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
    if (fd < 0) continue;
    // Locked by us, and still the file at `path` (not one made since).
    if (env->Flock(fd, LOCK_EX | LOCK_NB) == 0 && StillLinked(fd, path)) {
      env->Unlink(path.c_str());
      spdlog::info("removed abandoned staging file {}", path);
    }
    ::close(fd);
  }
  ::closedir(d);
  return Status::OK();
}

}  // namespace hookfs
