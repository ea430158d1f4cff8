// S3Client: the object bucket of a fleet (DESIGN §9), over libcurl.
//
// Contract:
// - Path-style URLs: S3Options::url is "http(s)://host:port/BUCKET"; an
//   object is at URL/KEY. Keys are limited to [A-Za-z0-9/._-] (what hookfs
//   writes: content-addressed hex names), anything else is kInvalidArgument,
//   so what curl signs is exactly what the server canonicalizes.
// - Every request is signed with SigV4 (CURLOPT_AWS_SIGV4) and carries
//   x-amz-content-sha256 of its body (radosgw refuses the signature without).
// - Every request has a connect timeout and a total timeout; a transfer that
//   stalls is aborted. Unreachable or too slow -> kTimedOut (ETIMEDOUT, like
//   etcd: §9 wants the same failure for both). 404 -> kNotFound, 403/401 ->
//   kPermissionDenied, other HTTP errors -> kIOError with S3's error Code.
// - The secret key is never logged and never part of a Status message.
// - Objects are immutable: PutIfAbsent sends If-None-Match: * and treats 412
//   (already there) as success. The bucket is not trusted: callers verify
//   what they fetch (SHA-256 of the content against its key) before use.
// - Thread-safe; connections are reused from a small pool.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hookfs/status.h"

namespace hookfs {

struct S3Credentials {
  std::string access_key, secret_key;
};

// From AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY when file is empty, else
// from FILE in the AWS shared-credentials format ([default] section,
// aws_access_key_id = …, aws_secret_access_key = …). kInvalidArgument names
// what is missing, never a value.
Result<S3Credentials> LoadS3Credentials(const std::string& file = "");

struct S3Options {
  std::string url;                 // http://127.0.0.1:7480/hookfs
  std::string region = "us-east-1";
  S3Credentials credentials;
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds timeout{120000};  // whole request (128 MiB at ~1 MiB/s)
  // A transfer slower than 64 KiB/s for this long is aborted as timed out.
  std::chrono::seconds stall_timeout{5};
  int list_page = 1000;  // keys per ListObjectsV2 page (max-keys)
  // The most a Get may return: a bucket is not trusted to bound what it
  // sends, and our memory is (§4). Larger objects are stored as parts.
  uint64_t max_get_bytes = 64ull << 20;
};

struct S3ObjectInfo {
  std::string key;
  uint64_t size = 0;
  std::string etag;
};

class S3Client {
 public:
  // Parts of a large object: below radosgw's 128 MiB object cap, and what one
  // transfer holds in memory.
  static constexpr uint64_t kDefaultPartSize = 64ull << 20;

  static Result<std::unique_ptr<S3Client>> Open(const S3Options& options);
  virtual ~S3Client() = default;

  // Creates the bucket; OK if this user owns it already.
  virtual Status CreateBucket() = 0;
  // Stores data under key unless key exists (412: OK, the bytes are the same
  // by construction of content-addressed keys).
  virtual Status PutIfAbsent(const std::string& key, std::string_view data) = 0;
  // kCorruption when the server sends more than max_get_bytes.
  virtual Result<std::string> Get(const std::string& key) = 0;
  // Bytes [offset, offset+length) (fewer at the end of the object).
  virtual Result<std::string> GetRange(const std::string& key, uint64_t offset, uint64_t length) = 0;
  virtual Result<S3ObjectInfo> Head(const std::string& key) = 0;
  // OK whether or not it existed (S3 semantics). For gc only.
  virtual Status Delete(const std::string& key) = 0;
  // Every key starting with prefix, in key order (ListObjectsV2, all pages).
  virtual Result<std::vector<S3ObjectInfo>> List(const std::string& prefix) = 0;

  // A large object as numbered parts: KEY.part000000, KEY.part000001, …, each
  // at most part_size bytes, then the manifest KEY.parts ("hookfs-parts 1
  // SIZE PART_SIZE COUNT\n") last, so an existing manifest means every part
  // is there. read(offset, buf, len) fills buf with len bytes of the object.
  // Memory: one part. Idempotent: parts already there are kept (412).
  using PartReader = std::function<Status(uint64_t offset, char* buf, size_t len)>;
  Status PutParts(const std::string& key, uint64_t size, const PartReader& read,
                  uint64_t part_size = kDefaultPartSize);
  // Streams the object stored by PutParts to write(offset, bytes), part by
  // part in order; kNotFound without a manifest, kCorruption when a part's
  // size is not what the manifest says. Content is the caller's to verify.
  using PartWriter = std::function<Status(uint64_t offset, std::string_view bytes)>;
  Status GetParts(const std::string& key, const PartWriter& write);
  // PartsKey(key, i) is the key of part i.
  static std::string PartKey(const std::string& key, uint64_t index);
  static std::string ManifestKey(const std::string& key) { return key + ".parts"; }
};

}  // namespace hookfs
