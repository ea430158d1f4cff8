// Hashing: SHA-256 (object identity, OpenSSL EVP with SHA-NI when present)
// and XXH3 (chunk and pack-trailer checksums: fast, stable since xxHash 0.8).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "hookfs/object_id.h"

namespace hookfs {

// Incremental SHA-256. Not thread-safe; one per thread or per blob.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  ObjectId Finish();  // resets, so the object can be reused

  static ObjectId Of(const void* data, size_t n);
  static ObjectId Of(std::string_view s) { return Of(s.data(), s.size()); }

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

uint64_t Xxh3_64(const void* data, size_t n);

// Streaming XXH3-128, for the pack trailer.
class Xxh3_128 {
 public:
  Xxh3_128();
  ~Xxh3_128();
  Xxh3_128(const Xxh3_128&) = delete;
  Xxh3_128& operator=(const Xxh3_128&) = delete;
  void Update(const void* data, size_t n);
  // Canonical (big-endian) 16 bytes, as XXH128_canonicalFromHash writes them.
  std::array<uint8_t, 16> Digest() const;

 private:
  void* state_;  // XXH3_state_t, allocated aligned by xxHash
};

}  // namespace hookfs
