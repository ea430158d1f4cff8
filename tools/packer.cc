#include "packer.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "hash_cache.h"
#include "hookfs/hash.h"
#include "hookfs/tree.h"

namespace hookfs {

namespace {

bool IsFileTypeHelper(EntryType t) { return t == EntryType::kFile || t == EntryType::kExecutable; }

struct Node {
  std::string name;
  std::string path;
  EntryType type = EntryType::kFile;
  uint64_t size = 0;
  std::string target;
  int64_t mtime = 0;  // files and symlinks: st_mtime when scanned (seconds)
  ObjectId id;
  struct stat st {};  // files: for the hash cache
  std::vector<std::unique_ptr<Node>> children;
};

class FdOwner {
 public:
  explicit FdOwner(int fd) : fd_(fd) {}
  ~FdOwner() { if (fd_ >= 0) ::close(fd_); }
  FdOwner(const FdOwner&) = delete;
  FdOwner& operator=(const FdOwner&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Status Scan(Node* dir, size_t depth, std::vector<Node*>* files) {
  if (depth > Limits::kMaxDepth)
    return Status::InvalidArgument(dir->path + ": deeper than " + std::to_string(Limits::kMaxDepth) + " levels");
  DIR* d = ::opendir(dir->path.c_str());
  if (!d) return Status::FromErrno(errno, "open directory " + dir->path);
  std::unique_ptr<DIR, int (*)(DIR*)> owner(d, ::closedir);
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    auto n = std::make_unique<Node>();
    n->name = name;
    n->path = dir->path + "/" + name;
    HOOKFS_RETURN_IF_ERROR(ValidateEntryName(name).Context(n->path));
    struct stat st;
    if (::lstat(n->path.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + n->path);
    n->mtime = int64_t(st.st_mtim.tv_sec);
    if (S_ISREG(st.st_mode)) {
      n->type = (st.st_mode & 0111) ? EntryType::kExecutable : EntryType::kFile;
      n->size = uint64_t(st.st_size);
      n->st = st;
      files->push_back(n.get());
    } else if (S_ISDIR(st.st_mode)) {
      n->type = EntryType::kDirectory;
      HOOKFS_RETURN_IF_ERROR(Scan(n.get(), depth + 1, files));
    } else if (S_ISLNK(st.st_mode)) {
      n->type = EntryType::kSymlink;
      std::string target(size_t(Limits::kMaxSymlinkTarget) + 1, '\0');
      ssize_t len = ::readlink(n->path.c_str(), target.data(), target.size());
      if (len < 0) return Status::FromErrno(errno, "readlink " + n->path);
      if (len == 0 || size_t(len) > Limits::kMaxSymlinkTarget)
        return Status::InvalidArgument(n->path + ": symlink target empty or longer than 4095 bytes");
      target.resize(size_t(len));
      n->target = std::move(target);
    } else {
      return Status::InvalidArgument(n->path + ": not a regular file, directory or symlink");
    }
    dir->children.push_back(std::move(n));
  }
  std::sort(dir->children.begin(), dir->children.end(),
            [](const auto& a, const auto& b) { return a->name < b->name; });
  if (dir->children.size() > Limits::kMaxTreeEntries)
    return Status::InvalidArgument(dir->path + ": more than " + std::to_string(Limits::kMaxTreeEntries) + " entries");
  return Status::OK();
}

class Progress {
 public:
  Progress(bool on, uint64_t total) : on_(on && total > (64u << 20)), total_(total) {}
  void Add(uint64_t n, const char* what) {
    if (!on_) return;
    uint64_t done = done_ += n;
    auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> g(mu_);
    if (now - last_ < std::chrono::milliseconds(200) && done < total_) return;
    last_ = now;
    std::fprintf(stderr, "\r%s %llu/%llu MiB", what, (unsigned long long)(done >> 20),
                 (unsigned long long)(total_ >> 20));
  }
  void Reset() { done_ = 0; }
  void Done() {
    if (on_) std::fputs("\r\033[K", stderr);
  }

 private:
  bool on_;
  uint64_t total_;
  std::atomic<uint64_t> done_{0};
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_{};
};

Status HashFiles(const std::vector<Node*>& files, unsigned threads, Progress* progress, HashCache* cache,
                  uint64_t* hashed) {
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> count{0};
  std::mutex mu;
  Status first_error;
  auto work = [&] {
    std::vector<char> buf(1 << 20);
    Sha256 sha;
    for (size_t i = next++; i < files.size(); i = next++) {
      Node* n = files[i];
      if (cache) {
        if (auto id = cache->Get(n->st)) {
          n->id = *id;
          progress->Add(n->size, "hashing");
          continue;
        }
      }
      ++count;
      FdOwner fd(::open(n->path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
      Status st;
      uint64_t total = 0;
      if (fd.get() < 0) {
        st = Status::FromErrno(errno, "open " + n->path);
      } else {
        ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
        for (;;) {
          ssize_t r = ::read(fd.get(), buf.data(), buf.size());
          if (r < 0 && errno == EINTR) continue;
          if (r < 0) { st = Status::FromErrno(errno, "read " + n->path); break; }
          if (r == 0) break;
          sha.Update(buf.data(), size_t(r));
          total += uint64_t(r);
          progress->Add(uint64_t(r), "hashing");
        }
      }
      if (st.ok() && total != n->size) st = Status::IOError(n->path + " changed size while being packed");
      if (!st.ok()) {
        std::lock_guard<std::mutex> g(mu);
        if (first_error.ok()) first_error = st;
        next = files.size();
        continue;
      }
      n->id = sha.Finish();
      // Trust the id only if the file did not change while we read it.
      struct stat after;
      if (cache && ::fstat(fd.get(), &after) == 0 && after.st_mtim.tv_sec == n->st.st_mtim.tv_sec &&
          after.st_mtim.tv_nsec == n->st.st_mtim.tv_nsec && after.st_ctim.tv_sec == n->st.st_ctim.tv_sec &&
          after.st_ctim.tv_nsec == n->st.st_ctim.tv_nsec)
        cache->Put(n->st, n->id);
    }
  };
  threads = std::max(1u, std::min<unsigned>(threads, unsigned(std::max<size_t>(files.size(), 1))));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  *hashed = count;
  return first_error;
}

struct Emit {
  std::vector<const Node*> blobs;  // unique, first seen
  std::vector<std::pair<ObjectId, std::string>> trees;  // children first
  std::unordered_set<ObjectId> seen_blobs, seen_trees;
};

// Computes tree ids bottom-up, and what the pack must carry.
Status BuildTrees(Node* dir, Emit* emit, PackStats* stats) {
  Tree tree;
  for (auto& c : dir->children) {
    if (c->type == EntryType::kDirectory) HOOKFS_RETURN_IF_ERROR(BuildTrees(c.get(), emit, stats));
    TreeEntry e;
    e.name = c->name;
    e.type = c->type;
    e.id = c->id;
    e.size = c->size;
    e.target = c->target;
    tree.entries.push_back(std::move(e));
    if (IsFileTypeHelper(c->type)) {
      ++stats->files;
      stats->bytes += c->size;
    }
  }
  HOOKFS_ASSIGN_OR_RETURN(std::string bytes, EncodeTree(std::move(tree)));
  dir->id = Sha256::Of(bytes);
  if (emit->seen_trees.insert(dir->id).second) emit->trees.emplace_back(dir->id, std::move(bytes));
  return Status::OK();
}

// Marks what a thin pack can omit: a subtree the store has is complete there.
void Select(const Node* dir, const PackOptions& o, bool parent_omitted, Emit* keep, PackStats* stats,
            std::unordered_set<ObjectId>* keep_trees) {
  bool omitted = parent_omitted || (o.has && o.has(dir->id, true));
  if (!omitted) keep_trees->insert(dir->id);
  for (const auto& c : dir->children) {
    if (c->type == EntryType::kDirectory) {
      Select(c.get(), o, omitted, keep, stats, keep_trees);
    } else if (IsFileTypeHelper(c->type) && !omitted && keep->seen_blobs.insert(c->id).second) {
      if (o.has && o.has(c->id, false)) ++stats->blobs_omitted;
      else keep->blobs.push_back(c.get());
    }
  }
}

Status CopyBlob(const Node* n, PackWriter* w, Progress* progress) {
  FdOwner fd(::open(n->path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return Status::FromErrno(errno, "open " + n->path);
  HOOKFS_RETURN_IF_ERROR(w->BeginBlob(n->id, n->size));
  std::vector<char> buf(1 << 20);
  uint64_t left = n->size;
  while (left > 0) {
    ssize_t r = ::read(fd.get(), buf.data(), size_t(std::min<uint64_t>(buf.size(), left)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, "read " + n->path);
    if (r == 0) return Status::IOError(n->path + " shrank while being packed");
    HOOKFS_RETURN_IF_ERROR(w->BlobData(buf.data(), size_t(r)));
    left -= uint64_t(r);
    progress->Add(uint64_t(r), "packing");
  }
  return Status::OK();
}

// The times record's order (docs/pack-format.md §6a): files and symlinks of
// a depth-first walk, each directory's entries in name order.
void CollectTimes(const Node* dir, std::vector<int64_t>* out) {
  for (const auto& c : dir->children) {
    if (c->type == EntryType::kDirectory) CollectTimes(c.get(), out);
    else out->push_back(c->mtime);
  }
}

}  // namespace

Result<PackStats> BuildPack(const std::string& dir, const PackOptions& o, ByteSink* out) {
  HOOKFS_RETURN_IF_ERROR(ValidateHookName(o.hook));
  HOOKFS_RETURN_IF_ERROR(ValidateFeature(o.feature));
  if (o.source_ref.size() > Limits::kMaxSourceRef) return Status::InvalidArgument("--source-ref longer than 1024 bytes");
  if (o.message.size() > Limits::kMaxMessage) return Status::InvalidArgument("--message longer than 4096 bytes");
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return Status::FromErrno(errno, dir);
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(dir + " is not a directory");

  Node root;
  root.path = dir;
  root.type = EntryType::kDirectory;
  std::vector<Node*> files;
  HOOKFS_RETURN_IF_ERROR(Scan(&root, 0, &files));
  uint64_t total = 0;
  for (const Node* f : files) total += f->size;
  Progress progress(o.progress, total);
  unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  std::unique_ptr<HashCache> cache;
  if (!o.hash_cache_dir.empty()) cache = HashCache::Open(o.hash_cache_dir, o.hash_cache_settle_ns);
  PackStats stats;
  HOOKFS_RETURN_IF_ERROR(HashFiles(files, threads, &progress, cache.get(), &stats.files_hashed));
  if (cache) cache->Save();

  Emit all;
  HOOKFS_RETURN_IF_ERROR(BuildTrees(&root, &all, &stats));
  stats.digest = root.id;
  Emit keep;
  std::unordered_set<ObjectId> keep_trees;
  Select(&root, o, false, &keep, &stats, &keep_trees);

  // File mtimes as they are: no SOURCE_DATE_EPOCH clamp (docs/design.md).
  std::vector<int64_t> mtimes;
  if (o.mtimes) CollectTimes(&root, &mtimes);
  const bool times = o.mtimes && mtimes.size() <= kMaxTimesPerRelease;
  stats.times = times;
  PackWriter w(out, times || o.signer ? kPackFormatVersion : kPackFormatVersionNoTimes);
  HOOKFS_RETURN_IF_ERROR(w.AddHook({o.hook, o.feature}));
  progress.Reset();
  for (const Node* b : keep.blobs) {
    HOOKFS_RETURN_IF_ERROR(CopyBlob(b, &w, &progress));
    ++stats.blobs_written;
  }
  for (const auto& [id, bytes] : all.trees) {
    if (!keep_trees.count(id)) {
      ++stats.trees_omitted;
      continue;
    }
    HOOKFS_RETURN_IF_ERROR(w.AddTree(id, bytes));
    ++stats.trees_written;
  }
  ReleaseRecord rel;
  rel.hook = o.hook;
  rel.root = root.id;
  rel.no_advance = o.no_advance;
  rel.created_at = o.created_at;
  rel.source_ref = o.source_ref;
  rel.message = o.message;
  HOOKFS_RETURN_IF_ERROR(w.AddRelease(rel));
  if (times) HOOKFS_RETURN_IF_ERROR(w.AddTimes(o.hook, root.id, mtimes));
  if (o.signer) {
    // The signature covers the times record as written (or an empty one).
    const ObjectId times_sha = Sha256::Of(EncodeTimes(o.hook, root.id, times ? mtimes : std::vector<int64_t>()));
    HOOKFS_ASSIGN_OR_RETURN(SignatureRecord sig, o.signer->SignRelease(rel, o.feature, times_sha));
    HOOKFS_RETURN_IF_ERROR(w.AddSignature(EncodeSignature(sig)));
  }
  HOOKFS_RETURN_IF_ERROR(w.Finish());
  progress.Done();
  return stats;
}

std::function<bool(const ObjectId&, bool)> MountHas(const std::string& mnt) {
  return [mnt](const ObjectId& id, bool is_tree) {
    struct stat st;
    std::string p = mnt + (is_tree ? "/objects/trees/" : "/objects/blobs/") + id.Hex();
    return ::stat(p.c_str(), &st) == 0;
  };
}

}  // namespace hookfs
