#include "hookfs/hash.h"

#include <openssl/evp.h>
#include <xxhash.h>

#include <cstdlib>

namespace hookfs {

namespace {
// Fetched once: the implicit per-call fetch of EVP_sha256() costs ~3x on
// small inputs (NOTES.md).
EVP_MD* Sha256Md() {
  static EVP_MD* md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (!m) std::abort();  // OpenSSL without SHA-256 cannot run hookfs at all
    return m;
  }();
  return md;
}
}  // namespace

struct Sha256::Ctx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Ctx() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  if (!ctx_->ctx || EVP_DigestInit_ex2(ctx_->ctx, Sha256Md(), nullptr) != 1) std::abort();
}
Sha256::~Sha256() = default;

void Sha256::Update(const void* data, size_t n) {
  if (n) EVP_DigestUpdate(ctx_->ctx, data, n);
}

ObjectId Sha256::Finish() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->ctx, out, &len);
  EVP_DigestInit_ex2(ctx_->ctx, Sha256Md(), nullptr);
  return ObjectId::FromBytes(out);
}

ObjectId Sha256::Of(const void* data, size_t n) {
  thread_local Sha256 h;
  h.Update(data, n);
  return h.Finish();
}

uint64_t Xxh3_64(const void* data, size_t n) { return XXH3_64bits(data, n); }

Xxh3_128::Xxh3_128() : state_(XXH3_createState()) {
  if (!state_) std::abort();
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}
Xxh3_128::~Xxh3_128() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Xxh3_128::Update(const void* data, size_t n) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, n);
}

std::array<uint8_t, 16> Xxh3_128::Digest() const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  std::array<uint8_t, 16> out;
  for (size_t i = 0; i < 16; ++i) out[i] = c.digest[i];
  return out;
}

}  // namespace hookfs
