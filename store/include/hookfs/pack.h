// Packs: the one file a publisher hands to hookfs. docs/pack-format.md is
// the specification; this header is its reader and writer.
//
//   pack    := header record* end trailer
//   header  := "HOOKPACK" u32 format_version(1 or 2) u32 flags(=0)
//   record  := 0x01 u32 len hook_decl          (len <= 64 KiB)
//            | 0x02 id[32] u64 size data[size]  (blob)
//            | 0x03 id[32] u32 len tree[len]    (canonical tree, tree.h)
//            | 0x04 u32 len release[len]        (len <= 64 KiB)
//            | 0x05 u32 len times[len]          (version 2 only; file mtimes)
//            | 0x06 u32 len signature[len]      (version 2; len <= 64 KiB; signature.h)
//   end     := 0x00
//   trailer := u64 record_count  xxh3_128[16]   (over every byte before it)
//
// Ids in a pack are declarations: the store recomputes each one and compares.
// Scanning is streaming: memory is bounded by the largest tree or record,
// never by the pack's size.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hookfs/hash.h"
#include "hookfs/object_id.h"
#include "hookfs/status.h"

namespace hookfs {

inline constexpr char kPackMagic[8] = {'H', 'O', 'O', 'K', 'P', 'A', 'C', 'K'};
// Version 2 adds the times record (file modification times) and the
// signature record; a pack with neither is written as version 1, which every
// hookfs reads.
inline constexpr uint32_t kPackFormatVersion = 2;
inline constexpr uint32_t kPackFormatVersionNoTimes = 1;
inline constexpr uint32_t kPackFormatVersion1 = kPackFormatVersionNoTimes;
inline constexpr size_t kPackHeaderSize = 16;
inline constexpr size_t kPackTrailerSize = 8 + 16;
inline constexpr size_t kMaxSmallRecord = 64 * 1024;

enum class RecordKind : uint8_t { kEnd = 0, kHook = 1, kBlob = 2, kTree = 3, kRelease = 4, kTimes = 5, kSignature = 6 };

// Times per release record: at most 2^21 files and symlinks, so a record
// body is at most 16 MiB + 101 bytes.
inline constexpr uint64_t kMaxTimesPerRelease = 1ull << 21;
inline constexpr size_t kMaxTimesRecord = 1 + 64 + 32 + 4 + 8 * kMaxTimesPerRelease;
// At most this many signature records per pack (a few per release).
inline constexpr size_t kMaxSignaturesPerPack = 16384;
// A signature record body is at most this long (an Ed25519 one is 196 bytes
// at most), so what apply holds for signatures stays a few MiB.
inline constexpr size_t kMaxSignatureRecord = 1024;

// hook_decl := u8 name_len name u8 feature_len feature. An empty feature
// means the pack names none (it matches any existing hook's feature).
struct HookDecl {
  std::string name;
  std::string feature;
};

// release := u8 hook_len hook root[32] u8 flags i64 created_at
//            u16 source_ref_len source_ref u16 message_len message
// flags bit 0: no_advance. created_at: the client's claim, Unix seconds.
struct ReleaseRecord {
  std::string hook;
  ObjectId root;  // declared digest: the id of the release's root tree
  bool no_advance = false;
  int64_t created_at = 0;
  std::string source_ref;
  std::string message;
};

// times := u8 hook_len hook root[32] u32 count i64 mtime[count]
// The modification times (Unix seconds) of the files, executables and
// symlinks of the release (hook, root), one per path, in the order of a
// depth-first walk visiting each tree's entries in order (docs/pack-format.md
// §6a). Not part of the digest. `mtimes` holds the raw count * 8 bytes.
struct TimesRecord {
  std::string hook;
  ObjectId root;
  uint32_t count = 0;
  std::string_view mtimes;  // little-endian i64s; valid while the caller's bytes are
  int64_t At(size_t i) const;
};

std::string EncodeTimes(std::string_view hook, const ObjectId& root, const std::vector<int64_t>& mtimes);
Result<TimesRecord> DecodeTimes(std::string_view bytes);

std::string EncodeHookDecl(const HookDecl& d);
Result<HookDecl> DecodeHookDecl(std::string_view bytes);
std::string EncodeRelease(const ReleaseRecord& r);
Result<ReleaseRecord> DecodeRelease(std::string_view bytes);

// Where a writer's bytes go.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual Status Write(const void* data, size_t n) = 0;
  virtual Status Flush() { return Status::OK(); }
};

// Buffered writes to a file descriptor the caller owns.
class FdSink : public ByteSink {
 public:
  explicit FdSink(int fd, std::string name);
  ~FdSink() override;
  Status Write(const void* data, size_t n) override;
  Status Flush() override;
  uint64_t bytes_written() const { return total_; }

 private:
  int fd_;
  std::string name_;
  std::string buf_;
  uint64_t total_ = 0;
};

class StringSink : public ByteSink {
 public:
  Status Write(const void* data, size_t n) override {
    out.append(static_cast<const char*>(data), n);
    return Status::OK();
  }
  std::string out;
};

// Writes one pack. Calls must follow the grammar above; Finish() writes the
// end marker and trailer and flushes. Declared ids are written as given.
class PackWriter {
 public:
  // `format_version` 1 cannot carry times or signature records (AddTimes
  // and AddSignature fail).
  explicit PackWriter(ByteSink* sink, uint32_t format_version = kPackFormatVersionNoTimes);
  Status AddHook(const HookDecl& decl);
  // A blob whose `size` bytes follow through BlobData calls.
  Status BeginBlob(const ObjectId& id, uint64_t size);
  Status BlobData(const void* data, size_t n);
  Status AddBlob(const ObjectId& id, std::string_view content);
  Status AddTree(const ObjectId& id, std::string_view encoded);
  Status AddRelease(const ReleaseRecord& rec);
  Status AddTimes(std::string_view hook, const ObjectId& root, const std::vector<int64_t>& mtimes);
  // `body` is an encoded signature record (EncodeSignature, signature.h).
  Status AddSignature(std::string_view body);
  Status Finish();
  uint64_t records() const { return records_; }

 private:
  Status Put(const void* data, size_t n);
  Status Header();
  Status EndBlobIfDone();

  ByteSink* sink_;
  uint32_t version_;
  Xxh3_128 trailer_;
  bool started_ = false;
  bool finished_ = false;
  uint64_t blob_remaining_ = 0;
  bool in_blob_ = false;
  uint64_t records_ = 0;
};

// What a scan reports, record by record, in pack order. Offsets are from the
// start of the pack. A visitor returning an error stops the scan with it.
class PackVisitor {
 public:
  virtual ~PackVisitor() = default;
  virtual Status OnHook(const HookDecl&) { return Status::OK(); }
  virtual Status OnBlobBegin(const ObjectId& /*declared*/, uint64_t /*size*/,
                             uint64_t /*data_offset*/) {
    return Status::OK();
  }
  virtual Status OnBlobData(const void* /*data*/, size_t /*n*/) { return Status::OK(); }
  virtual Status OnBlobEnd() { return Status::OK(); }
  virtual Status OnTree(const ObjectId& /*declared*/, std::string_view /*encoded*/,
                        uint64_t /*offset*/) {
    return Status::OK();
  }
  virtual Status OnRelease(const ReleaseRecord&) { return Status::OK(); }
  // Version 2 only. The record's mtimes point into the scanner's buffer.
  virtual Status OnTimes(const TimesRecord&) { return Status::OK(); }
  // Version 2: a signature record's body, undecoded (a body that does not
  // decode is no signature, not a malformed pack: DecodeSignature).
  virtual Status OnSignature(std::string_view /*body*/) { return Status::OK(); }
};

struct PackSummary {
  uint32_t format_version = 0;
  uint64_t records = 0;
  uint64_t bytes = 0;
};

// Reads the whole stream from `fd` (a file or a pipe) and checks framing,
// limits, record count and trailer. Everything reported before an error must
// be treated as unverified: a caller commits nothing until this returns OK.
// Errors are Malformed (or Unsupported for another format version, naming
// both versions; or IOError when the read itself fails).
//
// `data_bytes` is how many bytes the pack really holds (a sparse file's holes
// excluded, see PackDataBytes): a record declaring more than that is
// rejected before a byte of it is read (issue 9.5).
Result<PackSummary> ScanPack(int fd, PackVisitor* visitor, uint64_t data_bytes = UINT64_MAX);

// Bytes of data a regular file really holds (st_size less its holes), found
// with SEEK_DATA/SEEK_HOLE; UINT64_MAX for a pipe or socket.
Result<uint64_t> PackDataBytes(int fd);

}  // namespace hookfs
