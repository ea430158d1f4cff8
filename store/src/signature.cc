#include "hookfs/signature.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "coding.h"
#include "hookfs/hash.h"

namespace hookfs {

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Bio = std::unique_ptr<BIO, BioFree>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

Bio MemBio(std::string_view text) { return Bio(BIO_new_mem_buf(text.data(), int(text.size()))); }

std::string BioText(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return n > 0 ? std::string(p, size_t(n)) : std::string();
}

size_t Count(std::string_view s, std::string_view what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string_view::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

std::string EncodeSignature(const SignatureRecord& s) {
  std::string out;
  coding::PutU8(&out, uint8_t(s.hook.size()));
  out += s.hook;
  out.append(s.root.AsKey());
  coding::PutU8(&out, s.algorithm);
  out.append(s.key_id.AsKey());
  coding::PutLE16(&out, uint16_t(s.signature.size()));
  out += s.signature;
  return out;
}

Result<SignatureRecord> DecodeSignature(std::string_view bytes) {
  coding::Reader r(bytes);
  uint8_t hook_len, alg;
  uint16_t sig_len;
  std::string_view hook, root, key_id, sig;
  if (!r.U8(&hook_len) || !r.Bytes(hook_len, &hook) || !r.Bytes(ObjectId::kSize, &root) || !r.U8(&alg) ||
      !r.Bytes(ObjectId::kSize, &key_id) || !r.LE16(&sig_len) || !r.Bytes(sig_len, &sig) || !r.done())
    return Status::Malformed("signature record does not parse");
  SignatureRecord s;
  s.hook = std::string(hook);
  s.root = ObjectId::FromBytes(root.data());
  s.algorithm = alg;
  s.key_id = ObjectId::FromBytes(key_id.data());
  s.signature = std::string(sig);
  return s;
}

ObjectId TimesDigest(std::string_view hook, const ObjectId& root, uint32_t count, std::string_view raw_mtimes) {
  std::string head;
  coding::PutU8(&head, uint8_t(hook.size()));
  head += hook;
  head.append(root.AsKey());
  coding::PutLE32(&head, count);
  Sha256 sha;
  sha.Update(head);
  sha.Update(raw_mtimes);
  return sha.Finish();
}

std::string SignedMessage(const ReleaseRecord& r, std::string_view feature, const ObjectId& times_sha256) {
  std::string m(kSignatureDomain);
  coding::PutU8(&m, uint8_t(r.hook.size()));
  m += r.hook;
  coding::PutU8(&m, uint8_t(feature.size()));
  m += feature;
  m.append(r.root.AsKey());
  coding::PutU8(&m, r.no_advance ? 1 : 0);
  coding::PutLE64(&m, uint64_t(r.created_at));
  coding::PutLE16(&m, uint16_t(r.source_ref.size()));
  m += r.source_ref;
  coding::PutLE16(&m, uint16_t(r.message.size()));
  m += r.message;
  m.append(times_sha256.AsKey());
  return m;
}

// ---- public keys ---------------------------------------------------------------

Result<PublicKey> PublicKey::FromPem(std::string_view pem) {
  // Exactly one PEM block: OpenSSL would silently ignore whatever follows the first.
  if (Count(pem, "-----BEGIN ") != 1 || Count(pem, "-----BEGIN PUBLIC KEY-----") != 1)
    return Status::InvalidArgument("public_key must be one PEM 'PUBLIC KEY' block (hookctl keygen writes NAME.pub)");
  Bio bio = MemBio(pem);
  if (!bio) return Status::IOError("BIO_new_mem_buf");
  Pkey key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Status::InvalidArgument("public_key is not a PEM public key");
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519)
    return Status::InvalidArgument(std::string("public_key is a ") + OBJ_nid2sn(EVP_PKEY_get_base_id(key.get())) +
                                   " key; hookfs trusts Ed25519 keys only");
  PublicKey out;
  size_t len = out.raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), out.raw.data(), &len) != 1 || len != out.raw.size())
    return Status::InvalidArgument("public_key: cannot read the raw Ed25519 key");
  return out;
}

std::string PublicKey::Pem() const {
  Pkey key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw.data(), raw.size()));
  Bio bio(BIO_new(BIO_s_mem()));
  if (!key || !bio || PEM_write_bio_PUBKEY(bio.get(), key.get()) != 1) return "";
  return BioText(bio.get());
}

ObjectId PublicKey::KeyId() const { return Sha256::Of(raw.data(), raw.size()); }

bool PublicKey::Verify(std::string_view message, std::string_view sig) const {
  if (sig.size() != kEd25519SigSize) return false;
  Pkey key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw.data(), raw.size()));
  MdCtx ctx(EVP_MD_CTX_new());
  if (!key || !ctx) return false;
  // Ed25519 is one-shot: no digest (nullptr), the whole message at once.
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}

// ---- private keys --------------------------------------------------------------

SigningKey::~SigningKey() { OPENSSL_cleanse(priv_.data(), priv_.size()); }

Result<SigningKey> SigningKey::FromPem(std::string_view pem) {
  Bio bio = MemBio(pem);
  if (!bio) return Status::IOError("BIO_new_mem_buf");
  // A passphrase-protected key would prompt on the terminal: refuse it instead.
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, [](char*, int, int, void*) { return -1; }, nullptr));
  if (!key) return Status::InvalidArgument("not an unencrypted PEM private key (hookctl keygen writes NAME.key)");
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519)
    return Status::InvalidArgument(std::string("the signing key is a ") + OBJ_nid2sn(EVP_PKEY_get_base_id(key.get())) +
                                   " key; hookfs signs with Ed25519 only");
  SigningKey out;
  size_t len = out.priv_.size();
  size_t plen = out.pub_.raw.size();
  if (EVP_PKEY_get_raw_private_key(key.get(), out.priv_.data(), &len) != 1 || len != out.priv_.size() ||
      EVP_PKEY_get_raw_public_key(key.get(), out.pub_.raw.data(), &plen) != 1 || plen != out.pub_.raw.size())
    return Status::InvalidArgument("cannot read the raw Ed25519 key");
  return out;
}

Result<SigningKey> SigningKey::Load(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open signing key " + path);
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return Status::FromErrno(e, "read signing key " + path);
    }
    if (n == 0) break;
    text.append(buf, size_t(n));
    if (text.size() > 64 * 1024) break;
  }
  ::close(fd);
  auto key = FromPem(text);
  OPENSSL_cleanse(text.data(), text.size());
  if (!key.ok()) return key.status().Context(path);
  return key;
}

Result<std::string> SigningKey::Sign(std::string_view message) const {
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, priv_.data(), priv_.size()));
  MdCtx ctx(EVP_MD_CTX_new());
  if (!key || !ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1)
    return Status::IOError("Ed25519 sign init");
  std::string sig(kEd25519SigSize, '\0');
  size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      len != kEd25519SigSize)
    return Status::IOError("Ed25519 sign");
  return sig;
}

Result<SignatureRecord> SigningKey::SignRelease(const ReleaseRecord& r, std::string_view feature,
                                                const ObjectId& times_sha256) const {
  SignatureRecord s;
  s.hook = r.hook;
  s.root = r.root;
  s.algorithm = kSignatureEd25519;
  s.key_id = pub_.KeyId();
  HOOKFS_ASSIGN_OR_RETURN(s.signature, Sign(SignedMessage(r, feature, times_sha256)));
  return s;
}

// ---- keygen ------------------------------------------------------------------------

namespace {
Status WriteNew(const std::string& path, const std::string& text, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Status::FromErrno(errno, "create " + path);
  // O_CREAT's mode is filtered by the umask: a private key must be 0600 whatever it is.
  Status st = ::fchmod(fd, mode) == 0 ? Status::OK() : Status::FromErrno(errno, "chmod " + path);
  size_t off = 0;
  while (st.ok() && off < text.size()) {
    ssize_t w = ::write(fd, text.data() + off, text.size() - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) st = Status::FromErrno(errno, "write " + path);
    else off += size_t(w);
  }
  if (st.ok() && ::fsync(fd) != 0) st = Status::FromErrno(errno, "fsync " + path);
  if (::close(fd) != 0 && st.ok()) st = Status::FromErrno(errno, "close " + path);
  if (!st.ok()) ::unlink(path.c_str());
  return st;
}
}  // namespace

Result<PublicKey> GenerateKeyFiles(const std::string& prefix) {
  Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return Status::IOError("Ed25519 key generation failed");
  Bio priv(BIO_new(BIO_s_secmem())), pub(BIO_new(BIO_s_mem()));
  if (!priv || !pub || PEM_write_bio_PrivateKey(priv.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1 ||
      PEM_write_bio_PUBKEY(pub.get(), key.get()) != 1)
    return Status::IOError("PEM encoding of the new key failed");
  PublicKey out;
  size_t len = out.raw.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), out.raw.data(), &len) != 1) return Status::IOError("raw public key");
  std::string priv_text = BioText(priv.get());
  // The private key first: if NAME.pub cannot be written, NAME.key is removed again.
  Status st = WriteNew(prefix + ".key", priv_text, 0600);
  OPENSSL_cleanse(priv_text.data(), priv_text.size());
  HOOKFS_RETURN_IF_ERROR(st);
  st = WriteNew(prefix + ".pub", BioText(pub.get()), 0644);
  if (!st.ok()) {
    ::unlink((prefix + ".key").c_str());
    return st;
  }
  return out;
}

}  // namespace hookfs
