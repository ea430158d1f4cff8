#include "apply_signatures.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace hookfs::apply_sig {

namespace {
std::string ReleaseKey(std::string_view hook, const ObjectId& root) {
  std::string k(hook);
  k.push_back('\0');
  k.append(root.AsKey());
  return k;
}
std::string Short(const ObjectId& id) { return id.Hex().substr(0, 16); }
}  // namespace

void Collector::Add(std::string_view body) {
  auto s = DecodeSignature(body);
  if (!s.ok()) {
    ++undecodable_;  // counts as no signature (its release cannot even be named)
    return;
  }
  // Of another algorithm or size: kept as a note (counts as none), not its bytes.
  if (s->algorithm != kSignatureEd25519 || s->signature.size() != kEd25519SigSize) s->signature.resize(std::min<size_t>(s->signature.size(), 1));
  by_release_[ReleaseKey(s->hook, s->root)].push_back(std::move(s).value());
}

Verdict Collector::Judge(const std::vector<KeyInfo>& keys, bool pinned, const ReleaseRecord& r,
                         std::string_view feature, const ObjectId& times_sha256) const {
  Verdict v;
  if (!pinned) {
    v.ok = true;  // unpinned hooks need no signature; signed_by stays null
    return v;
  }
  const std::string pre = "hook '" + r.hook + "' is pinned (only releases signed by a trusted key are accepted): ";
  auto it = by_release_.find(ReleaseKey(r.hook, r.root));
  if (it == by_release_.end()) {
    v.reason = pre + "the release has no signature";
    if (undecodable_) v.reason += " (" + std::to_string(undecodable_) + " signature record(s) in the pack do not decode)";
    return v;
  }
  std::string message;  // built once, only if some key is worth a verify
  std::vector<std::string> problems;
  for (const SignatureRecord& s : it->second) {
    if (s.algorithm != kSignatureEd25519 || s.signature.size() != kEd25519SigSize) {
      problems.push_back("a signature of algorithm " + std::to_string(s.algorithm) +
                         " or not 64 bytes long counts as none (hookfs accepts Ed25519 only)");
      continue;
    }
    const std::string hex = s.key_id.Hex();
    const KeyInfo* key = nullptr;
    for (const KeyInfo& k : keys)
      if (k.key_id == hex) key = &k;
    if (!key) {
      problems.push_back("signed by key " + Short(s.key_id) + "… which is not trusted (unknown or revoked)");
      continue;
    }
    if (!key->Covers(r.hook)) {
      problems.push_back("signed by key '" + key->name + "' which does not cover hook '" + r.hook + "'");
      continue;
    }
    if (message.empty()) message = SignedMessage(r, feature, times_sha256);
    if (!key->public_key.Verify(message, s.signature)) {
      problems.push_back("the signature by key '" + key->name +
                         "' does not verify (hook, feature, digest, metadata or times differ from what was signed)");
      continue;
    }
    v.ok = true;
    v.signed_by = SignedBy{key->name, key->key_id};
    return v;
  }
  v.reason = pre;
  for (size_t i = 0; i < problems.size(); ++i) v.reason += (i ? "; " : "") + problems[i];
  return v;
}

Status PinIfCovered(const Tables& t, lmdb::Txn& txn, std::string_view hook, const std::vector<KeyInfo>& keys) {
  if (!keys_txn::Pinned(std::nullopt, hook, keys, false)) return Status::OK();
  HOOKFS_ASSIGN_OR_RETURN(std::optional<HookInfo> h, ledger_txn::GetHook(t, txn, hook));
  if (!h || h->pinned) return Status::OK();
  h->pinned = true;
  return ledger_txn::PutHook(t, txn, *h);
}

}  // namespace hookfs::apply_sig
