#include "test_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "hookfs/hash.h"

namespace hookfs::test {

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/hookfs-test-XXXXXX";
  char* p = ::mkdtemp(tmpl.data());
  if (!p) std::abort();
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, std::string_view content, int mode) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(content.data(), std::streamsize(content.size()));
  f.close();
  ::chmod(path.c_str(), mode_t(mode));
}

std::string Big(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char(seed + (i * 131) % 251);
  return s;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TreeEntry File(std::string name, std::string_view content, bool exec) {
  TreeEntry e;
  e.name = std::move(name);
  e.type = exec ? EntryType::kExecutable : EntryType::kFile;
  e.id = Sha256::Of(content);
  e.size = content.size();
  return e;
}

TreeEntry Dir(std::string name, const ObjectId& tree) {
  TreeEntry e;
  e.name = std::move(name);
  e.type = EntryType::kDirectory;
  e.id = tree;
  return e;
}

TreeEntry Link(std::string name, std::string target) {
  TreeEntry e;
  e.name = std::move(name);
  e.type = EntryType::kSymlink;
  e.target = std::move(target);
  return e;
}

ObjectId PackSpec::Blob(std::string_view content) {
  ObjectId id = Sha256::Of(content);
  blobs.emplace_back(id, std::string(content));
  return id;
}

ObjectId PackSpec::AddTree(std::vector<TreeEntry> entries) {
  auto enc = EncodeTree(Tree{std::move(entries)});
  EXPECT_TRUE(enc.ok()) << enc.status().ToString();
  ObjectId id = Sha256::Of(*enc);
  trees.emplace_back(id, *enc);
  return id;
}

ReleaseRecord MakeRelease(const std::string& hook, const ObjectId& root) {
  ReleaseRecord r;
  r.hook = hook;
  r.root = root;
  r.created_at = 1700000000;
  r.source_ref = "git:abc123";
  r.message = "test release";
  return r;
}

void PackSpec::Release(const std::string& hook, const ObjectId& root, bool no_advance) {
  ReleaseRecord r = MakeRelease(hook, root);
  r.no_advance = no_advance;
  releases.push_back(r);
}

std::string PackSpec::Bytes() const {
  StringSink sink;
  PackWriter w(&sink, times.empty() && signatures.empty() ? kPackFormatVersionNoTimes : kPackFormatVersion);
  for (const auto& h : hooks) EXPECT_TRUE(w.AddHook(h).ok());
  for (const auto& [id, content] : blobs) EXPECT_TRUE(w.AddBlob(id, content).ok());
  for (const auto& [id, enc] : trees) EXPECT_TRUE(w.AddTree(id, enc).ok());
  for (const auto& r : releases) EXPECT_TRUE(w.AddRelease(r).ok());
  for (const auto& t : times) EXPECT_TRUE(w.AddTimes(t.hook, t.root, t.mtimes).ok());
  for (const auto& sig : signatures) EXPECT_TRUE(w.AddSignature(sig).ok());
  EXPECT_TRUE(w.Finish().ok());
  return sink.out;
}

std::string PackSpec::WriteTo(const std::string& path) const {
  WriteFile(path, Bytes());
  return path;
}

Counts Count(const Store& store) {
  Counts c;
  auto view = store.Read();
  EXPECT_TRUE(view.ok());
  const Tables& t = store.tables();
  auto n = [&](MDB_dbi dbi) {
    MDB_stat st;
    EXPECT_EQ(mdb_stat(view->txn().get(), dbi, &st), 0);
    return size_t(st.ms_entries);
  };
  c.blobs = n(t.blobs);
  c.chunks = n(t.chunks);
  c.trees = n(t.trees);
  c.hooks = n(t.hooks);
  c.releases = n(t.releases);
  c.pointers = n(t.pointers);
  c.history = n(t.history);
  c.runs = n(t.runs);
  c.pending = n(t.pending_session) + n(t.pending_blob);
  c.journal = n(t.journal);
  return c;
}

std::string ToString(const Counts& c) {
  std::ostringstream s;
  s << "blobs=" << c.blobs << " chunks=" << c.chunks << " trees=" << c.trees << " hooks=" << c.hooks
    << " releases=" << c.releases << " pointers=" << c.pointers << " history=" << c.history << " runs=" << c.runs
    << " pending=" << c.pending << " journal=" << c.journal;
  return s.str();
}

namespace {
void FlipValueByte(Store* store, MDB_dbi dbi, const std::string& key, size_t offset) {
  auto txn = store->BeginWrite();
  ASSERT_TRUE(txn.ok()) << txn.status().ToString();
  auto cur = txn->Get(dbi, key);
  ASSERT_TRUE(cur.ok()) << cur.status().ToString();
  ASSERT_LT(offset, cur->size());
  std::string bad(*cur);
  bad[offset] ^= 0x20;
  ASSERT_TRUE(txn->Put(dbi, key, bad).ok());
  ASSERT_TRUE(txn->Commit().ok());
}
}  // namespace

void FlipChunkByte(Store* store, const ObjectId& blob, uint32_t index, size_t offset) {
  auto info = store->Read()->GetBlobInfo(blob);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  FlipValueByte(store, store->tables().chunks, ChunkKey(blob, info->writer, index), offset);
}

void FlipTreeByte(Store* store, const ObjectId& tree, size_t offset) {
  FlipValueByte(store, store->tables().trees, std::string(tree.AsKey()), 8 + offset);  // after the XXH3
}

std::unique_ptr<Store> OpenStore(const std::string& dir, StoreOptions opts) {
  opts.dir = dir;
  auto s = Store::Open(opts);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

}  // namespace hookfs::test
