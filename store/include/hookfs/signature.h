// Release signatures (DESIGN.md §8; docs/pack-format.md §6b; docs/keys.md).
//
// The algorithm is pinned: Ed25519 (RFC 8032, pure, no prehash), fixed by
// the store; a pack never chooses it. A signature record names the release
// it signs by (hook, root), its algorithm byte, the signer's key id and the
// signature; one of any other algorithm, or that does not decode, counts as
// no signature. What is signed is SignedMessage(): a domain-separated,
// length-prefixed encoding of everything the release claims (hook, feature,
// digest, no_advance, created_at, source_ref, message, and the SHA-256 of
// its times record), so changing any of them breaks the signature.
// Key id: lowercase hex of SHA-256 over the 32-byte raw public key.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "hookfs/object_id.h"
#include "hookfs/pack.h"
#include "hookfs/status.h"

namespace hookfs {

inline constexpr uint8_t kSignatureEd25519 = 1;  // the only algorithm the store accepts
inline constexpr size_t kEd25519KeySize = 32;
inline constexpr size_t kEd25519SigSize = 64;
// The first bytes of every signed message (domain separation: a release
// signature can never be mistaken for a signature over anything else).
inline constexpr std::string_view kSignatureDomain{"hookfs release signature v1\0", 28};

// signature := u8 hook_len hook root[32] u8 algorithm key_id[32]
//              u16 sig_len sig[sig_len]
struct SignatureRecord {
  std::string hook;
  ObjectId root;
  uint8_t algorithm = kSignatureEd25519;
  ObjectId key_id;  // SHA-256 of the signer's raw public key
  std::string signature;
};

std::string EncodeSignature(const SignatureRecord& s);
// Malformed when the body does not parse (the store then counts the record
// as no signature); any algorithm byte is returned as is.
Result<SignatureRecord> DecodeSignature(std::string_view bytes);

// SHA-256 over the release's times record body (docs/pack-format.md §6a):
// u8 hook_len hook root[32] u32 count i64 mtime[count], with `raw_mtimes`
// the count * 8 little-endian bytes. A release without a times record is
// hashed as one with count 0.
ObjectId TimesDigest(std::string_view hook, const ObjectId& root, uint32_t count, std::string_view raw_mtimes);

// The exact bytes an Ed25519 signature covers:
//   "hookfs release signature v1\0"
//   u8 hook_len hook  u8 feature_len feature  root[32]  u8 flags
//   i64 created_at  u16 source_ref_len source_ref  u16 message_len message
//   times_sha256[32]
// `feature` is what the pack's hook declaration names (maybe empty).
std::string SignedMessage(const ReleaseRecord& r, std::string_view feature, const ObjectId& times_sha256);

// An Ed25519 public key (32 raw bytes).
struct PublicKey {
  std::array<uint8_t, kEd25519KeySize> raw{};
  // Parses one PEM SubjectPublicKeyInfo block. InvalidArgument unless it is
  // exactly one Ed25519 public key.
  static Result<PublicKey> FromPem(std::string_view pem);
  std::string Pem() const;  // canonical PEM text (OpenSSL's encoding)
  ObjectId KeyId() const;   // SHA-256 of raw
  // True iff `sig` is a valid Ed25519 signature of `message` by this key.
  bool Verify(std::string_view message, std::string_view sig) const;
};

// An Ed25519 private key held in memory (wiped on destruction).
class SigningKey {
 public:
  SigningKey() = default;
  ~SigningKey();
  SigningKey(const SigningKey&) = default;
  SigningKey& operator=(const SigningKey&) = default;

  // Reads NAME.key (PEM PKCS#8). InvalidArgument unless it is an Ed25519
  // private key.
  static Result<SigningKey> Load(const std::string& path);
  static Result<SigningKey> FromPem(std::string_view pem);
  const PublicKey& public_key() const { return pub_; }
  Result<std::string> Sign(std::string_view message) const;
  // A signature record for release `r` of a hook declared with `feature`.
  Result<SignatureRecord> SignRelease(const ReleaseRecord& r, std::string_view feature,
                                      const ObjectId& times_sha256) const;

 private:
  std::array<uint8_t, kEd25519KeySize> priv_{};
  PublicKey pub_;
};

// hookctl keygen: writes PREFIX.key (PEM PKCS#8, mode 0600, created with
// O_EXCL: an existing file is never overwritten) and PREFIX.pub (PEM
// SubjectPublicKeyInfo). Returns the new key's public half.
Result<PublicKey> GenerateKeyFiles(const std::string& prefix);

}  // namespace hookfs
