#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "hookfs/hash.h"
#include "hookfs/pack.h"
#include "packer.h"
#include "test_util.h"

namespace hookfs {
namespace {

using test::TempDir;

struct Recorder : PackVisitor {
  std::vector<std::string> lines;
  Sha256 sha;
  Status OnHook(const HookDecl& d) override {
    lines.push_back("hook " + d.name + " " + d.feature);
    return Status::OK();
  }
  Status OnBlobBegin(const ObjectId& id, uint64_t size, uint64_t) override {
    lines.push_back("blob " + id.Hex() + " " + std::to_string(size));
    return Status::OK();
  }
  Status OnBlobData(const void* p, size_t n) override {
    sha.Update(p, n);
    return Status::OK();
  }
  Status OnBlobEnd() override {
    lines.push_back("data " + sha.Finish().Hex());
    return Status::OK();
  }
  Status OnTree(const ObjectId& id, std::string_view enc, uint64_t) override {
    lines.push_back("tree " + id.Hex() + " " + Sha256::Of(enc).Hex());
    return Status::OK();
  }
  Status OnRelease(const ReleaseRecord& r) override {
    lines.push_back("release " + r.hook + " " + r.root.Hex() + (r.no_advance ? " no-advance" : ""));
    return Status::OK();
  }
  Status OnTimes(const TimesRecord& t) override {
    std::string l = "times " + t.hook + " " + t.root.Hex() + " " + std::to_string(t.count);
    for (size_t i = 0; i < t.count; ++i) l += " " + std::to_string(t.At(i));
    lines.push_back(l);
    return Status::OK();
  }
};

Result<PackSummary> ScanBytes(const std::string& bytes, Recorder* rec, TempDir& dir) {
  test::WriteFile(dir / "p.pack", bytes);
  int fd = ::open((dir / "p.pack").c_str(), O_RDONLY);
  auto r = ScanPack(fd, rec);
  ::close(fd);
  return r;
}

test::PackSpec SmallSpec() {
  test::PackSpec spec;
  spec.hooks.push_back({"app", "shell"});
  ObjectId a = spec.Blob("hello\n");
  spec.Blob(std::string(3 * kChunkSize + 17, 'z'));
  ObjectId sub = spec.AddTree({test::File("a.txt", "hello\n")});
  ObjectId root = spec.AddTree({test::Dir("sub", sub), test::File("big", std::string(3 * kChunkSize + 17, 'z')),
                                test::Link("l", "sub/a.txt")});
  (void)a;
  spec.Release("app", root);
  return spec;
}

TEST(Pack, WriterAndScannerAgreeOnEveryRecord) {
  TempDir dir;
  Recorder rec;
  auto sum = ScanBytes(SmallSpec().Bytes(), &rec, dir);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->format_version, 1u);
  EXPECT_EQ(sum->records, 6u);
  ASSERT_EQ(rec.lines.size(), 8u);
  EXPECT_EQ(rec.lines[0], "hook app shell");
  EXPECT_EQ(rec.lines[1], "blob " + Sha256::Of("hello\n").Hex() + " 6");
  EXPECT_EQ(rec.lines[2], "data " + Sha256::Of("hello\n").Hex());
  EXPECT_EQ(rec.lines[4], "data " + Sha256::Of(std::string(3 * kChunkSize + 17, 'z')).Hex());
}

TEST(Pack, EveryTruncationIsMalformed) {
  TempDir dir;
  std::string bytes = SmallSpec().Bytes();
  // Every prefix of the pack, including cuts inside blob data and the trailer.
  for (size_t len = 0; len < bytes.size(); len += (len < 2000 || len > bytes.size() - 2000) ? 1 : 4099) {
    Recorder rec;
    auto sum = ScanBytes(bytes.substr(0, len), &rec, dir);
    ASSERT_FALSE(sum.ok()) << "prefix of " << len << " bytes accepted";
    EXPECT_TRUE(sum.status().Is(Code::kMalformed)) << len << ": " << sum.status().ToString();
  }
}

TEST(Pack, FlippedByteAnywhereIsCaught) {
  TempDir dir;
  std::string bytes = SmallSpec().Bytes();
  for (size_t pos = 0; pos < bytes.size(); pos += 97) {
    std::string bad = bytes;
    bad[pos] ^= 0x40;
    Recorder rec;
    auto sum = ScanBytes(bad, &rec, dir);
    EXPECT_FALSE(sum.ok()) << "flip at " << pos << " accepted";
  }
}

TEST(Pack, BadTrailerTrailingBytesAndCount) {
  TempDir dir;
  std::string bytes = SmallSpec().Bytes();
  Recorder rec;
  std::string bad = bytes;
  bad.back() ^= 1;
  auto s1 = ScanBytes(bad, &rec, dir);
  EXPECT_TRUE(s1.status().Is(Code::kMalformed));
  EXPECT_NE(s1.status().message().find("trailer"), std::string::npos) << s1.status().ToString();
  auto s2 = ScanBytes(bytes + "x", &rec, dir);
  EXPECT_TRUE(s2.status().Is(Code::kMalformed));
  EXPECT_NE(s2.status().message().find("after the pack trailer"), std::string::npos);
}

TEST(Pack, UnknownFormatVersionNamesBothVersions) {
  TempDir dir;
  std::string bytes = SmallSpec().Bytes();
  bytes[8] = 7;
  Recorder rec;
  auto sum = ScanBytes(bytes, &rec, dir);
  ASSERT_TRUE(sum.status().Is(Code::kUnsupported)) << sum.status().ToString();
  EXPECT_NE(sum.status().message().find("version 7"), std::string::npos) << sum.status().message();
  EXPECT_NE(sum.status().message().find("versions 1 and 2"), std::string::npos) << sum.status().message();
  EXPECT_TRUE(rec.lines.empty());
}

TEST(Pack, NotAPack) {
  TempDir dir;
  Recorder rec;
  auto sum = ScanBytes("#!/bin/sh\necho this is not a pack\n", &rec, dir);
  EXPECT_TRUE(sum.status().Is(Code::kMalformed));
  EXPECT_NE(sum.status().message().find("magic"), std::string::npos);
}

TEST(Pack, BlobDeclaringMoreBytesThanThePackHolds) {
  TempDir dir;
  StringSink sink;
  PackWriter w(&sink);
  ASSERT_TRUE(w.AddHook({"app", ""}).ok());
  ASSERT_TRUE(w.BeginBlob(Sha256::Of("abc"), 1 << 20).ok());
  ASSERT_TRUE(w.BlobData("abc", 3).ok());
  // Writer refuses to finish a short blob...
  EXPECT_FALSE(w.Finish().ok());
  // ...and a hand-made one that claims more than follows is malformed.
  Recorder rec;
  auto sum = ScanBytes(sink.out + std::string(30, '\0'), &rec, dir);
  EXPECT_TRUE(sum.status().Is(Code::kMalformed)) << sum.status().ToString();
}

TEST(Pack, RecordsRefuseBadFields) {
  EXPECT_FALSE(DecodeHookDecl(EncodeHookDecl({"Bad Name", ""})).ok());
  EXPECT_FALSE(DecodeHookDecl(EncodeHookDecl({"ok", "bad feature!"})).ok());
  ReleaseRecord r = test::MakeRelease("app", Sha256::Of("x"));
  auto enc = EncodeRelease(r);
  auto dec = DecodeRelease(enc);
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(dec->source_ref, "git:abc123");
  EXPECT_FALSE(DecodeRelease(enc + "x").ok());
  enc[1 + 3 + 32] = 2;  // unknown flag bit
  EXPECT_FALSE(DecodeRelease(enc).ok());
}

// The golden pack pins the format: if the writer changes a byte, this fails.
// HOOKFS_UPDATE_GOLDEN=1 rewrites it (only for a deliberate format change).
void MakeGoldenTree(const std::string& root) {
  test::WriteFile(root + "/bin/run", "#!/bin/sh\necho hello\n", 0755);
  test::WriteFile(root + "/etc/app.conf", "name = golden\n", 0644);
  test::WriteFile(root + "/dup.txt", "name = golden\n", 0644);
  test::WriteFile(root + "/name with space.txt", "spaces\n", 0644);
  test::WriteFile(root + "/\xc3\xbc" "n\xc3\xaf" "code.txt", "utf-8\n", 0644);
  test::WriteFile(root + "/zero", "", 0644);
  std::filesystem::create_directories(root + "/empty");
  std::filesystem::create_symlink("bin/run", root + "/link");
}

// The golden tree's files and symlinks get these mtimes, in walk order
// (bin/run, dup.txt, etc/app.conf, link, name with space.txt, zero,
// ünïcode.txt: 0xc3 sorts after 'z'); docs/pack-format.md §11.
const std::vector<std::pair<std::string, int64_t>> kGoldenTimes = {
    {"bin/run", 1700000000}, {"dup.txt", 1600000000}, {"etc/app.conf", 1500000000},
    {"link", 1767225599},    {"name with space.txt", 1}, {"zero", -86400},
    {"\xc3\xbc" "n\xc3\xaf" "code.txt", 1767225600}};

void SetGoldenTimes(const std::string& root) {
  for (const auto& [path, t] : kGoldenTimes) {
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (root + "/" + path).c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << path;
  }
}

// Version 1 stays what it was: without times the writer still produces the
// version-1 golden pack byte for byte (and every reader reads it).
TEST(Pack, GoldenPackIsReproducedByteForByte) {
  TempDir dir;
  MakeGoldenTree(dir / "src");
  PackOptions o;
  o.mtimes = false;
  o.hook = "golden";
  o.feature = "shell";
  o.source_ref = "git:0123abcd";
  o.message = "golden pack";
  o.created_at = 1767225600;  // 2026-01-01T00:00:00Z
  StringSink sink;
  auto stats = BuildPack(dir / "src", o, &sink);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  const std::string golden = std::string(HOOKFS_GOLDEN_DIR) + "/sample.pack";
  if (std::getenv("HOOKFS_UPDATE_GOLDEN")) test::WriteFile(golden, sink.out);
  EXPECT_EQ(sink.out, test::ReadFile(golden)) << "the pack writer no longer produces tests/golden/sample.pack";
  EXPECT_EQ(stats->digest.Hex(), "da7868de09764f35e3d85e5612cd5828fd192c1d77b4880f4ebeb544a3bb99f2")
      << "release digest of the golden tree changed";
  EXPECT_EQ(stats->files, 6u);
  EXPECT_EQ(stats->blobs_written, 5u);  // dup.txt shares etc/app.conf's blob

  // The ids in the pack are the documented ones (tests/golden/sample.ids).
  Recorder rec;
  int fd = ::open(golden.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  auto sum = ScanPack(fd, &rec);
  ::close(fd);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  std::string listing;
  for (const auto& l : rec.lines) listing += l + "\n";
  if (std::getenv("HOOKFS_UPDATE_GOLDEN")) test::WriteFile(std::string(HOOKFS_GOLDEN_DIR) + "/sample.ids", listing);
  EXPECT_EQ(listing, test::ReadFile(std::string(HOOKFS_GOLDEN_DIR) + "/sample.ids"));
  // A blob id is exactly sha256sum of the content: the empty file's is well known.
  EXPECT_NE(listing.find("blob e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0"),
            std::string::npos);
}

// Version 2: the same tree with its files' mtimes in a times record.
TEST(Pack, GoldenTimesPackIsReproducedByteForByte) {
  TempDir dir;
  MakeGoldenTree(dir / "src");
  SetGoldenTimes(dir / "src");
  PackOptions o;
  o.hook = "golden";
  o.feature = "shell";
  o.source_ref = "git:0123abcd";
  o.message = "golden pack";
  o.created_at = 1767225600;
  StringSink sink;
  auto stats = BuildPack(dir / "src", o, &sink);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_TRUE(stats->times);
  const std::string golden = std::string(HOOKFS_GOLDEN_DIR) + "/sample-v2.pack";
  if (std::getenv("HOOKFS_UPDATE_GOLDEN")) test::WriteFile(golden, sink.out);
  EXPECT_EQ(sink.out, test::ReadFile(golden)) << "the pack writer no longer produces tests/golden/sample-v2.pack";
  EXPECT_EQ(stats->digest.Hex(), "da7868de09764f35e3d85e5612cd5828fd192c1d77b4880f4ebeb544a3bb99f2")
      << "times must not change the digest";
  Recorder rec;
  int fd = ::open(golden.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  auto sum = ScanPack(fd, &rec);
  ::close(fd);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->format_version, 2u);
  std::string listing;
  for (const auto& l : rec.lines) listing += l + "\n";
  if (std::getenv("HOOKFS_UPDATE_GOLDEN")) test::WriteFile(std::string(HOOKFS_GOLDEN_DIR) + "/sample-v2.ids", listing);
  EXPECT_EQ(listing, test::ReadFile(std::string(HOOKFS_GOLDEN_DIR) + "/sample-v2.ids"));
  std::string times = "times golden da7868de09764f35e3d85e5612cd5828fd192c1d77b4880f4ebeb544a3bb99f2 7";
  for (const auto& [path, t] : kGoldenTimes) times += " " + std::to_string(t);
  EXPECT_NE(listing.find(times + "\n"), std::string::npos) << listing;
}

TEST(Pack, TimesRecordsNeedVersion2AndParseStrictly) {
  StringSink s1;
  PackWriter v1(&s1);
  EXPECT_TRUE(v1.AddTimes("app", Sha256::Of("x"), {1, 2}).Is(Code::kInvalidArgument));
  std::string body = EncodeTimes("app", Sha256::Of("x"), {5, -7});
  auto rec = DecodeTimes(body);
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  EXPECT_EQ(rec->count, 2u);
  EXPECT_EQ(rec->At(1), -7);
  EXPECT_TRUE(DecodeTimes(body + "x").status().Is(Code::kMalformed));
  EXPECT_TRUE(DecodeTimes(body.substr(0, body.size() - 1)).status().Is(Code::kMalformed));
  // A times record in a version-1 pack: hand-made, since the writer refuses.
  TempDir dir;
  StringSink s2;
  PackWriter v2(&s2, kPackFormatVersion);
  ASSERT_TRUE(v2.AddHook({"app", ""}).ok());
  ASSERT_TRUE(v2.AddTimes("app", Sha256::Of("x"), {1}).ok());
  ASSERT_TRUE(v2.Finish().ok());
  Recorder ok_rec;
  ASSERT_TRUE(ScanBytes(s2.out, &ok_rec, dir).ok());
  std::string as_v1 = s2.out;
  as_v1[8] = 1;
  Recorder bad_rec;
  auto r = ScanBytes(as_v1, &bad_rec, dir);
  EXPECT_TRUE(r.status().Is(Code::kMalformed));
  EXPECT_NE(r.status().message().find("version-1 pack"), std::string::npos) << r.status().ToString();
}

TEST(Pack, DigestDependsOnContentOnlyNotOnClientFields) {
  TempDir dir;
  MakeGoldenTree(dir / "src");
  PackOptions a, b;
  a.hook = b.hook = "h";
  a.created_at = 1;
  b.created_at = 999999;
  a.source_ref = "one";
  b.source_ref = "two";
  a.message = "first";
  b.message = "second";
  b.no_advance = true;
  StringSink sa, sb;
  auto ra = BuildPack(dir / "src", a, &sa);
  auto rb = BuildPack(dir / "src", b, &sb);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(ra->digest, rb->digest);
  EXPECT_NE(sa.out, sb.out);
  // Nor on the files' mtimes.
  SetGoldenTimes(dir / "src");
  StringSink st;
  auto rt = BuildPack(dir / "src", a, &st);
  ASSERT_TRUE(rt.ok());
  EXPECT_EQ(rt->digest, ra->digest);
  EXPECT_NE(st.out, sa.out);
  // A content change does change it.
  test::WriteFile(dir / "src/zero", "now one byte: x");
  StringSink sc;
  auto rc = BuildPack(dir / "src", a, &sc);
  ASSERT_TRUE(rc.ok());
  EXPECT_NE(rc->digest, ra->digest);
}

// The hash cache skips unchanged files and never trusts a changed one.
TEST(Pack, HashCacheSkipsUnchangedFilesAndSeesEveryChange) {
  TempDir dir;
  MakeGoldenTree(dir / "src");
  PackOptions o;
  o.hook = "golden";
  o.hash_cache_dir = dir / "cache";
  o.hash_cache_settle_ns = 0;  // test files are brand new; trust them at once
  StringSink plain, first, second, third;
  PackOptions no_cache = o;
  no_cache.hash_cache_dir.clear();
  auto ref = BuildPack(dir / "src", no_cache, &plain);
  auto a = BuildPack(dir / "src", o, &first);
  ASSERT_TRUE(ref.ok() && a.ok());
  EXPECT_EQ(a->files_hashed, 6u);
  auto b = BuildPack(dir / "src", o, &second);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->files_hashed, 0u) << "unchanged files were hashed again";
  EXPECT_EQ(b->digest, ref->digest);
  EXPECT_EQ(second.out, plain.out);
  // Same size, new bytes: ctime moves, so the file is hashed again.
  test::WriteFile(dir / "src/etc/app.conf", "name = GOLDEN\n");
  auto c = BuildPack(dir / "src", o, &third);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->files_hashed, 1u);
  EXPECT_NE(c->digest, ref->digest);
  StringSink check;
  auto fresh = BuildPack(dir / "src", no_cache, &check);
  EXPECT_EQ(c->digest, fresh->digest);
}

TEST(Pack, YoungFilesAreNotCachedAndABrokenCacheIsIgnored) {
  TempDir dir;
  MakeGoldenTree(dir / "src");
  PackOptions o;
  o.hook = "golden";
  o.hash_cache_dir = dir / "cache";  // default settle window: these files are too young
  StringSink s1, s2;
  ASSERT_TRUE(BuildPack(dir / "src", o, &s1).ok());
  auto again = BuildPack(dir / "src", o, &s2);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->files_hashed, 6u);
  test::WriteFile(dir / "cache/hashes.mdb", "this is not an LMDB file at all");
  StringSink s3;
  auto broken = BuildPack(dir / "src", o, &s3);
  ASSERT_TRUE(broken.ok()) << broken.status().ToString();
  EXPECT_EQ(broken->digest, again->digest);
}

TEST(Pack, PackerRefusesSpecialFilesAndBadHookNames) {
  TempDir dir;
  test::WriteFile(dir / "src/a", "a");
  ASSERT_EQ(::mkfifo((dir / "src/fifo").c_str(), 0644), 0);
  PackOptions o;
  o.hook = "h";
  StringSink s;
  auto r = BuildPack(dir / "src", o, &s);
  EXPECT_TRUE(r.status().Is(Code::kInvalidArgument)) << r.status().ToString();
  o.hook = "Not-Valid";
  ::unlink((dir / "src/fifo").c_str());
  EXPECT_TRUE(BuildPack(dir / "src", o, &s).status().Is(Code::kInvalidArgument));
}

}  // namespace
}  // namespace hookfs
