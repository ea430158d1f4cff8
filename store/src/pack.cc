#include "hookfs/pack.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "coding.h"
#include "hookfs/tree.h"

namespace hookfs {

// ---- records ---------------------------------------------------------------

std::string EncodeHookDecl(const HookDecl& d) {
  std::string out;
  coding::PutU8(&out, uint8_t(d.name.size()));
  out += d.name;
  coding::PutU8(&out, uint8_t(d.feature.size()));
  out += d.feature;
  return out;
}

Result<HookDecl> DecodeHookDecl(std::string_view bytes) {
  coding::Reader r(bytes);
  uint8_t n, f;
  std::string_view name, feature;
  if (!r.U8(&n) || !r.Bytes(n, &name) || !r.U8(&f) || !r.Bytes(f, &feature) || !r.done())
    return Status::Malformed("hook declaration does not parse");
  // A bad name inside a pack is a malformed pack (EBADMSG), not a bad argument.
  if (Status ns = ValidateHookName(name); !ns.ok()) return Status::Malformed("hook declaration: " + ns.message());
  Status fs = ValidateFeature(feature);
  if (!fs.ok()) return Status::Malformed("hook '" + std::string(name) + "': " + fs.message());
  return HookDecl{std::string(name), std::string(feature)};
}

std::string EncodeRelease(const ReleaseRecord& rec) {
  std::string out;
  coding::PutU8(&out, uint8_t(rec.hook.size()));
  out += rec.hook;
  out.append(rec.root.AsKey());
  coding::PutU8(&out, rec.no_advance ? 1 : 0);
  coding::PutLE64(&out, uint64_t(rec.created_at));
  coding::PutLE16(&out, uint16_t(rec.source_ref.size()));
  out += rec.source_ref;
  coding::PutLE16(&out, uint16_t(rec.message.size()));
  out += rec.message;
  return out;
}

Result<ReleaseRecord> DecodeRelease(std::string_view bytes) {
  coding::Reader r(bytes);
  ReleaseRecord rec;
  uint8_t hook_len, flags;
  uint16_t ref_len, msg_len;
  uint64_t created;
  std::string_view hook, root, ref, msg;
  if (!r.U8(&hook_len) || !r.Bytes(hook_len, &hook) || !r.Bytes(ObjectId::kSize, &root) ||
      !r.U8(&flags) || !r.LE64v(&created) || !r.LE16(&ref_len) || !r.Bytes(ref_len, &ref) ||
      !r.LE16(&msg_len) || !r.Bytes(msg_len, &msg) || !r.done())
    return Status::Malformed("release record does not parse");
  if (Status ns = ValidateHookName(hook); !ns.ok()) return Status::Malformed("release record: " + ns.message());
  if (flags & ~1u) return Status::Malformed("release record has unknown flags " + std::to_string(flags));
  if (ref.size() > Limits::kMaxSourceRef) return Status::Malformed("source_ref longer than 1024 bytes");
  if (msg.size() > Limits::kMaxMessage) return Status::Malformed("message longer than 4096 bytes");
  rec.hook = std::string(hook);
  rec.root = ObjectId::FromBytes(root.data());
  rec.no_advance = flags & 1;
  rec.created_at = int64_t(created);
  rec.source_ref = std::string(ref);
  rec.message = std::string(msg);
  return rec;
}

int64_t TimesRecord::At(size_t i) const { return int64_t(coding::LE64(mtimes.data() + 8 * i)); }

std::string EncodeTimes(std::string_view hook, const ObjectId& root, const std::vector<int64_t>& mtimes) {
  std::string out;
  out.reserve(1 + hook.size() + ObjectId::kSize + 4 + 8 * mtimes.size());
  coding::PutU8(&out, uint8_t(hook.size()));
  out += hook;
  out.append(root.AsKey());
  coding::PutLE32(&out, uint32_t(mtimes.size()));
  for (int64_t t : mtimes) coding::PutLE64(&out, uint64_t(t));
  return out;
}

Result<TimesRecord> DecodeTimes(std::string_view bytes) {
  coding::Reader r(bytes);
  uint8_t hook_len;
  uint32_t count;
  std::string_view hook, root, mtimes;
  if (!r.U8(&hook_len) || !r.Bytes(hook_len, &hook) || !r.Bytes(ObjectId::kSize, &root) || !r.LE32v(&count))
    return Status::Malformed("times record does not parse");
  if (Status ns = ValidateHookName(hook); !ns.ok()) return Status::Malformed("times record: " + ns.message());
  if (count > kMaxTimesPerRelease)
    return Status::Malformed("times record lists " + std::to_string(count) + " times, limit " +
                             std::to_string(kMaxTimesPerRelease));
  if (!r.Bytes(size_t(count) * 8, &mtimes) || !r.done())
    return Status::Malformed("times record of hook '" + std::string(hook) + "' is not 8 bytes per listed time");
  TimesRecord rec;
  rec.hook = std::string(hook);
  rec.root = ObjectId::FromBytes(root.data());
  rec.count = count;
  rec.mtimes = mtimes;
  return rec;
}

// ---- sinks -----------------------------------------------------------------

FdSink::FdSink(int fd, std::string name) : fd_(fd), name_(std::move(name)) { buf_.reserve(1 << 20); }
FdSink::~FdSink() { (void)Flush(); }

Status FdSink::Write(const void* data, size_t n) {
  total_ += n;
  if (buf_.size() + n <= (1u << 20)) {
    buf_.append(static_cast<const char*>(data), n);
    return Status::OK();
  }
  HOOKFS_RETURN_IF_ERROR(Flush());
  auto p = static_cast<const char*>(data);
  if (n >= (1u << 20)) {
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "write " + name_);
      }
      p += w;
      n -= size_t(w);
    }
    return Status::OK();
  }
  buf_.append(p, n);
  return Status::OK();
}

Status FdSink::Flush() {
  size_t off = 0;
  while (off < buf_.size()) {
    ssize_t w = ::write(fd_, buf_.data() + off, buf_.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      buf_.clear();
      return Status::FromErrno(errno, "write " + name_);
    }
    off += size_t(w);
  }
  buf_.clear();
  return Status::OK();
}

// ---- writer ----------------------------------------------------------------

PackWriter::PackWriter(ByteSink* sink, uint32_t format_version) : sink_(sink), version_(format_version) {}

Status PackWriter::Put(const void* data, size_t n) {
  trailer_.Update(data, n);
  return sink_->Write(data, n);
}

Status PackWriter::Header() {
  if (finished_) return Status::InvalidArgument("pack already finished");
  if (in_blob_) return Status::InvalidArgument("previous blob is missing data");
  if (started_) return Status::OK();
  started_ = true;
  std::string h(kPackMagic, sizeof kPackMagic);
  coding::PutLE32(&h, version_);
  coding::PutLE32(&h, 0);
  return Put(h.data(), h.size());
}

Status PackWriter::AddHook(const HookDecl& decl) {
  HOOKFS_RETURN_IF_ERROR(Header());
  std::string body = EncodeHookDecl(decl);
  std::string rec;
  coding::PutU8(&rec, uint8_t(RecordKind::kHook));
  coding::PutLE32(&rec, uint32_t(body.size()));
  rec += body;
  ++records_;
  return Put(rec.data(), rec.size());
}

Status PackWriter::BeginBlob(const ObjectId& id, uint64_t size) {
  HOOKFS_RETURN_IF_ERROR(Header());
  std::string rec;
  coding::PutU8(&rec, uint8_t(RecordKind::kBlob));
  rec.append(id.AsKey());
  coding::PutLE64(&rec, size);
  ++records_;
  in_blob_ = size > 0;
  blob_remaining_ = size;
  return Put(rec.data(), rec.size());
}

Status PackWriter::BlobData(const void* data, size_t n) {
  if (!in_blob_ || n > blob_remaining_) return Status::InvalidArgument("blob data beyond its declared size");
  blob_remaining_ -= n;
  if (blob_remaining_ == 0) in_blob_ = false;
  return Put(data, n);
}

Status PackWriter::AddBlob(const ObjectId& id, std::string_view content) {
  HOOKFS_RETURN_IF_ERROR(BeginBlob(id, content.size()));
  if (content.empty()) return Status::OK();
  return BlobData(content.data(), content.size());
}

Status PackWriter::AddTree(const ObjectId& id, std::string_view encoded) {
  HOOKFS_RETURN_IF_ERROR(Header());
  std::string rec;
  coding::PutU8(&rec, uint8_t(RecordKind::kTree));
  rec.append(id.AsKey());
  coding::PutLE32(&rec, uint32_t(encoded.size()));
  ++records_;
  HOOKFS_RETURN_IF_ERROR(Put(rec.data(), rec.size()));
  return Put(encoded.data(), encoded.size());
}

Status PackWriter::AddRelease(const ReleaseRecord& r) {
  HOOKFS_RETURN_IF_ERROR(Header());
  std::string body = EncodeRelease(r);
  std::string rec;
  coding::PutU8(&rec, uint8_t(RecordKind::kRelease));
  coding::PutLE32(&rec, uint32_t(body.size()));
  rec += body;
  ++records_;
  return Put(rec.data(), rec.size());
}

Status PackWriter::AddTimes(std::string_view hook, const ObjectId& root, const std::vector<int64_t>& mtimes) {
  if (version_ < 2) return Status::InvalidArgument("a version-1 pack cannot carry times");
  if (mtimes.size() > kMaxTimesPerRelease) return Status::InvalidArgument("more times than a record holds");
  HOOKFS_RETURN_IF_ERROR(Header());
  std::string body = EncodeTimes(hook, root, mtimes);
  std::string rec;
  coding::PutU8(&rec, uint8_t(RecordKind::kTimes));
  coding::PutLE32(&rec, uint32_t(body.size()));
  ++records_;
  HOOKFS_RETURN_IF_ERROR(Put(rec.data(), rec.size()));
  return Put(body.data(), body.size());
}

Status PackWriter::AddSignature(std::string_view body) {
  if (version_ < 2) return Status::InvalidArgument("a version-1 pack cannot carry signatures");
  if (body.size() > kMaxSignatureRecord) return Status::InvalidArgument("signature record too long");
  HOOKFS_RETURN_IF_ERROR(Header());
  std::string rec;
  coding::PutU8(&rec, uint8_t(RecordKind::kSignature));
  coding::PutLE32(&rec, uint32_t(body.size()));
  rec += body;
  ++records_;
  return Put(rec.data(), rec.size());
}

Status PackWriter::Finish() {
  HOOKFS_RETURN_IF_ERROR(Header());
  std::string end;
  coding::PutU8(&end, uint8_t(RecordKind::kEnd));
  coding::PutLE64(&end, records_);
  HOOKFS_RETURN_IF_ERROR(Put(end.data(), end.size()));
  auto digest = trailer_.Digest();
  finished_ = true;
  HOOKFS_RETURN_IF_ERROR(sink_->Write(digest.data(), digest.size()));
  return sink_->Flush();
}

// ---- scanner ---------------------------------------------------------------

namespace {

// Buffered sequential reader that hashes everything it hands out.
class Input {
 public:
  explicit Input(int fd) : fd_(fd), buf_(1 << 20) {}

  // Fills `dst` with exactly n bytes or fails (Malformed on early EOF).
  Status Read(void* dst, size_t n, const char* what) {
    auto out = static_cast<char*>(dst);
    while (n > 0) {
      if (pos_ == len_) HOOKFS_RETURN_IF_ERROR(Fill());
      if (len_ == 0) return Status::Malformed(std::string("pack truncated in ") + what + " at byte " + std::to_string(offset_));
      size_t k = std::min(n, len_ - pos_);
      std::memcpy(out, buf_.data() + pos_, k);
      Consume(k);
      out += k;
      n -= k;
    }
    return Status::OK();
  }

  // Hands out up to `max` buffered bytes without copying.
  Result<std::string_view> Peek(size_t max, const char* what) {
    if (pos_ == len_) HOOKFS_RETURN_IF_ERROR(Fill());
    if (len_ == 0) return Status::Malformed(std::string("pack truncated in ") + what + " at byte " + std::to_string(offset_));
    return std::string_view(buf_.data() + pos_, std::min(max, len_ - pos_));
  }
  void Consume(size_t k) {
    hash_.Update(buf_.data() + pos_, k);
    pos_ += k;
    offset_ += k;
  }
  // Reads without hashing (the trailer digest itself).
  Status ReadRaw(void* dst, size_t n) {
    auto out = static_cast<char*>(dst);
    while (n > 0) {
      if (pos_ == len_) HOOKFS_RETURN_IF_ERROR(Fill());
      if (len_ == 0) return Status::Malformed("pack truncated in trailer");
      size_t k = std::min(n, len_ - pos_);
      std::memcpy(out, buf_.data() + pos_, k);
      pos_ += k;
      offset_ += k;
      out += k;
      n -= k;
    }
    return Status::OK();
  }
  Result<bool> AtEof() {
    if (pos_ < len_) return false;
    HOOKFS_RETURN_IF_ERROR(Fill());
    return len_ == 0;
  }
  uint64_t offset() const { return offset_; }
  std::array<uint8_t, 16> Digest() const { return hash_.Digest(); }

 private:
  Status Fill() {
    pos_ = len_ = 0;
    for (;;) {
      ssize_t r = ::read(fd_, buf_.data(), buf_.size());
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::IOError(std::string("read pack: ") + std::strerror(errno));
      }
      len_ = size_t(r);
      return Status::OK();
    }
  }
  int fd_;
  std::vector<char> buf_;
  size_t pos_ = 0, len_ = 0;
  uint64_t offset_ = 0;
  Xxh3_128 hash_;
};

}  // namespace

Result<uint64_t> PackDataBytes(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "stat pack");
  if (!S_ISREG(st.st_mode)) return UINT64_MAX;
  const off_t size = st.st_size;
  uint64_t data = 0;
  off_t pos = 0;
  while (pos < size) {
    off_t d = ::lseek(fd, pos, SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      if (errno == EINVAL) return uint64_t(size);  // no hole support: all data
      return Status::FromErrno(errno, "seek pack");
    }
    off_t h = ::lseek(fd, d, SEEK_HOLE);
    if (h < 0) return Status::FromErrno(errno, "seek pack");
    data += uint64_t(h - d);
    pos = h;
  }
  if (::lseek(fd, 0, SEEK_SET) < 0) return Status::FromErrno(errno, "seek pack");
  return data;
}

Result<PackSummary> ScanPack(int fd, PackVisitor* v, uint64_t data_bytes) {
  // What a record may declare: never more than the pack really holds.
  auto declares_too_much = [&](uint64_t at, uint64_t n) { return at > data_bytes || n > data_bytes - at; };
  Input in(fd);
  PackSummary sum;
  char header[kPackHeaderSize];
  HOOKFS_RETURN_IF_ERROR(in.Read(header, sizeof header, "header"));
  if (std::memcmp(header, kPackMagic, sizeof kPackMagic) != 0)
    return Status::Malformed("not a hookfs pack (bad magic)");
  sum.format_version = coding::LE32(header + 8);
  if (sum.format_version != kPackFormatVersion && sum.format_version != kPackFormatVersionNoTimes)
    return Status::Unsupported("pack format version " + std::to_string(sum.format_version) +
                               " is not supported (this hookfs reads versions " +
                               std::to_string(kPackFormatVersionNoTimes) + " and " +
                               std::to_string(kPackFormatVersion) + ")");
  if (coding::LE32(header + 12) != 0) return Status::Malformed("pack header has unknown flags");

  std::string body;
  size_t signatures = 0;
  for (;;) {
    uint8_t kind;
    HOOKFS_RETURN_IF_ERROR(in.Read(&kind, 1, "record kind"));
    if (kind == uint8_t(RecordKind::kEnd)) break;
    if (++sum.records > Limits::kMaxRecordsPerPack)
      return Status::Malformed("pack has more than " + std::to_string(Limits::kMaxRecordsPerPack) + " records");
    const uint64_t rec_offset = in.offset() - 1;
    switch (kind) {
      case uint8_t(RecordKind::kHook):
      case uint8_t(RecordKind::kRelease): {
        char lenb[4];
        HOOKFS_RETURN_IF_ERROR(in.Read(lenb, 4, "record length"));
        uint32_t len = coding::LE32(lenb);
        if (len > kMaxSmallRecord)
          return Status::Malformed("record at byte " + std::to_string(rec_offset) + " declares " +
                                   std::to_string(len) + " bytes, limit 65536");
        body.resize(len);
        HOOKFS_RETURN_IF_ERROR(in.Read(body.data(), len, "record"));
        if (kind == uint8_t(RecordKind::kHook)) {
          HOOKFS_ASSIGN_OR_RETURN(HookDecl d, DecodeHookDecl(body));
          HOOKFS_RETURN_IF_ERROR(v->OnHook(d));
        } else {
          HOOKFS_ASSIGN_OR_RETURN(ReleaseRecord r, DecodeRelease(body));
          HOOKFS_RETURN_IF_ERROR(v->OnRelease(r));
        }
        break;
      }
      case uint8_t(RecordKind::kBlob): {
        char hdr[ObjectId::kSize + 8];
        HOOKFS_RETURN_IF_ERROR(in.Read(hdr, sizeof hdr, "blob header"));
        ObjectId id = ObjectId::FromBytes(hdr);
        uint64_t size = coding::LE64(hdr + ObjectId::kSize);
        if (size > Limits::kMaxBlobSize)
          return Status::Malformed("blob " + id.Hex() + " declares " + std::to_string(size) + " bytes, limit 1 TiB");
        if (declares_too_much(in.offset(), size))
          return Status::Malformed("blob " + id.Hex() + " declares " + std::to_string(size) + " bytes at byte " +
                                   std::to_string(in.offset()) + "; the pack holds only " + std::to_string(data_bytes) +
                                   " bytes of data (truncated or sparse)");
        HOOKFS_RETURN_IF_ERROR(v->OnBlobBegin(id, size, in.offset()));
        uint64_t left = size;
        while (left > 0) {
          HOOKFS_ASSIGN_OR_RETURN(std::string_view piece, in.Peek(left, "blob data"));
          HOOKFS_RETURN_IF_ERROR(v->OnBlobData(piece.data(), piece.size()));
          in.Consume(piece.size());
          left -= piece.size();
        }
        HOOKFS_RETURN_IF_ERROR(v->OnBlobEnd());
        break;
      }
      case uint8_t(RecordKind::kTree): {
        char hdr[ObjectId::kSize + 4];
        HOOKFS_RETURN_IF_ERROR(in.Read(hdr, sizeof hdr, "tree header"));
        ObjectId id = ObjectId::FromBytes(hdr);
        uint32_t len = coding::LE32(hdr + ObjectId::kSize);
        if (len > Limits::kMaxTreeBytes)
          return Status::Malformed("tree " + id.Hex() + " declares " + std::to_string(len) + " bytes, limit 16 MiB");
        if (declares_too_much(in.offset(), len))
          return Status::Malformed("tree " + id.Hex() + " declares " + std::to_string(len) + " bytes at byte " +
                                   std::to_string(in.offset()) + "; the pack holds only " + std::to_string(data_bytes) +
                                   " bytes of data (truncated or sparse)");
        body.resize(len);
        HOOKFS_RETURN_IF_ERROR(in.Read(body.data(), len, "tree"));
        HOOKFS_RETURN_IF_ERROR(v->OnTree(id, body, rec_offset));
        break;
      }
      case uint8_t(RecordKind::kTimes): {
        if (sum.format_version < 2)
          return Status::Malformed("times record at byte " + std::to_string(rec_offset) +
                                   " in a version-1 pack (times need version 2)");
        char lenb[4];
        HOOKFS_RETURN_IF_ERROR(in.Read(lenb, 4, "record length"));
        uint32_t len = coding::LE32(lenb);
        if (len > kMaxTimesRecord)
          return Status::Malformed("times record at byte " + std::to_string(rec_offset) + " declares " +
                                   std::to_string(len) + " bytes, limit " + std::to_string(kMaxTimesRecord));
        if (declares_too_much(in.offset(), len))
          return Status::Malformed("times record at byte " + std::to_string(rec_offset) + " declares " +
                                   std::to_string(len) + " bytes; the pack holds only " +
                                   std::to_string(data_bytes) + " bytes of data (truncated or sparse)");
        body.resize(len);
        HOOKFS_RETURN_IF_ERROR(in.Read(body.data(), len, "times record"));
        HOOKFS_ASSIGN_OR_RETURN(TimesRecord t, DecodeTimes(body));
        HOOKFS_RETURN_IF_ERROR(v->OnTimes(t));
        break;
      }
      case uint8_t(RecordKind::kSignature): {
        if (sum.format_version < 2)
          return Status::Malformed("signature record at byte " + std::to_string(rec_offset) +
                                   " in a version-1 pack (signatures need version 2)");
        if (++signatures > kMaxSignaturesPerPack)
          return Status::Malformed("pack has more than " + std::to_string(kMaxSignaturesPerPack) + " signatures");
        char lenb[4];
        HOOKFS_RETURN_IF_ERROR(in.Read(lenb, 4, "record length"));
        uint32_t len = coding::LE32(lenb);
        if (len > kMaxSignatureRecord)
          return Status::Malformed("signature record at byte " + std::to_string(rec_offset) + " declares " +
                                   std::to_string(len) + " bytes, limit " + std::to_string(kMaxSignatureRecord));
        body.resize(len);
        HOOKFS_RETURN_IF_ERROR(in.Read(body.data(), len, "signature record"));
        HOOKFS_RETURN_IF_ERROR(v->OnSignature(body));
        break;
      }
      default:
        return Status::Malformed("unknown record kind " + std::to_string(kind) + " at byte " +
                                 std::to_string(rec_offset));
    }
  }
  char countb[8];
  HOOKFS_RETURN_IF_ERROR(in.Read(countb, 8, "trailer"));
  if (coding::LE64(countb) != sum.records)
    return Status::Malformed("trailer counts " + std::to_string(coding::LE64(countb)) + " records, pack has " +
                             std::to_string(sum.records));
  auto expect = in.Digest();
  std::array<uint8_t, 16> got;
  HOOKFS_RETURN_IF_ERROR(in.ReadRaw(got.data(), got.size()));
  if (got != expect) return Status::Malformed("trailer checksum mismatch (pack damaged or truncated)");
  HOOKFS_ASSIGN_OR_RETURN(bool eof, in.AtEof());
  if (!eof) return Status::Malformed("bytes after the pack trailer");
  sum.bytes = in.offset();
  return sum;
}

}  // namespace hookfs
