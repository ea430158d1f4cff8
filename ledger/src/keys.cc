#include "hookfs/keys.h"

#include <fnmatch.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "hookfs/tree.h"

namespace hookfs {

using nlohmann::json;
using lmdb::Cursor;
using lmdb::Txn;

namespace {
bool HookChar(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'; }

std::string Quote(std::string_view s) { return DumpJson(json(std::string(s.substr(0, 80)))); }

std::string EncodeKey(const KeyInfo& k) {
  return DumpJson(json{{"name", k.name}, {"public_key", k.public_key.Pem()}, {"key_id", k.key_id},
                       {"hooks", k.hooks}, {"added_at", k.added_at}, {"added_by", k.added_by}});
}

Result<KeyInfo> DecodeKey(std::string_view bytes) {
  KeyInfo k;
  std::string pem;
  try {
    json j = json::parse(bytes);
    k.name = j.at("name");
    pem = j.at("public_key");
    k.key_id = j.at("key_id");
    k.hooks = j.at("hooks").get<std::vector<std::string>>();
    k.added_at = j.at("added_at");
    k.added_by = j.at("added_by");
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("key record does not decode: ") + e.what());
  }
  auto pub = PublicKey::FromPem(pem);
  if (!pub.ok()) return Status::Corruption("key record '" + k.name + "': " + pub.status().message());
  k.public_key = *pub;
  if (k.public_key.KeyId().Hex() != k.key_id) return Status::Corruption("key record '" + k.name + "': key_id mismatch");
  return k;
}

Status AppendKeyHistory(const Tables& t, Txn& txn, json event) {
  HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.key_history));
  HOOKFS_ASSIGN_OR_RETURN(bool any, c.Last());
  uint64_t seq = any && c.key().size() == 8 ? lmdb::GetBE64(c.key().data()) + 1 : 1;
  event["seq"] = seq;
  std::string k;
  lmdb::PutBE64(&k, seq);
  return txn.Put(t.key_history, k, DumpJson(event));
}

// key_history and journal lines for one key event, in the caller's txn.
Status RecordKeyEvent(const Tables& t, Txn& txn, std::string_view action, const KeyInfo& k, const Actor& who,
                      int64_t now, const std::vector<std::string>& pinned) {
  json ev = {{"time", FormatTime(now)}, {"uid", who.uid},  {"action", std::string(action)},
             {"key", k.name},           {"key_id", k.key_id}, {"hooks", k.hooks}};
  if (!pinned.empty()) ev["pinned"] = pinned;
  HOOKFS_RETURN_IF_ERROR(AppendKeyHistory(t, txn, ev));
  ev["event"] = "key";
  return ledger_txn::AppendJournal(t, txn, ev);
}
}  // namespace

bool PatternMatches(std::string_view pattern, std::string_view hook) {
  return ::fnmatch(std::string(pattern).c_str(), std::string(hook).c_str(), 0) == 0;
}

bool KeyInfo::Covers(std::string_view hook) const {
  return std::any_of(hooks.begin(), hooks.end(), [&](const std::string& p) { return PatternMatches(p, hook); });
}

json ToJson(const KeyInfo& k) {
  return {{"name", k.name},   {"public_key", k.public_key.Pem()}, {"key_id", k.key_id},
          {"hooks", k.hooks}, {"added_at", FormatTime(k.added_at)}, {"added_by", k.added_by}};
}

Status ValidateKeyName(std::string_view name) {
  if (!ValidateHookName(name).ok())
    return Status::InvalidArgument("bad key name " + Quote(name) + ": must match [a-z0-9][a-z0-9._-]{0,63}");
  return Status::OK();
}

Status ValidateHookPattern(std::string_view p) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("bad hook pattern " + Quote(p) + ": " + why);
  };
  if (p.empty()) return bad("empty");
  if (p.size() > kMaxPatternBytes) return bad("longer than 255 bytes");
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (HookChar(c) || c == '*' || c == '?') continue;
    if (c != '[') return bad(std::string("character ") + Quote(std::string_view(&p[i], 1)) +
                             " is neither a hook-name character nor one of * ? [ ]");
    size_t j = i + 1;
    if (j < p.size() && p[j] == '!') ++j;
    size_t first = j;
    while (j < p.size() && p[j] != ']') {
      if (!HookChar(p[j])) return bad("a bracket expression may hold hook-name characters only");
      ++j;
    }
    if (j == p.size()) return bad("unterminated [");
    if (j == first) return bad("empty bracket expression");
    i = j;
  }
  return Status::OK();
}

Result<KeyInfo> ParseKeyDocument(std::string_view name, std::string_view text) {
  HOOKFS_RETURN_IF_ERROR(ValidateKeyName(name));
  if (text.size() > kMaxKeyDocument) return Status::InvalidArgument("key document larger than 64 KiB");
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument("key document is not a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    static const char* known[] = {"public_key", "hooks", "name", "key_id", "added_at", "added_by"};
    if (std::none_of(std::begin(known), std::end(known), [&](const char* k) { return it.key() == k; }))
      return Status::InvalidArgument("key document has an unknown member " + Quote(it.key()) +
                                     " (want public_key and hooks)");
  }
  auto pk = j.find("public_key");
  if (pk == j.end() || !pk->is_string()) return Status::InvalidArgument("key document needs \"public_key\": PEM text");
  auto hooks = j.find("hooks");
  if (hooks == j.end() || !hooks->is_array() || hooks->empty())
    return Status::InvalidArgument("key document needs \"hooks\": a non-empty list of patterns");
  if (hooks->size() > kMaxKeyPatterns) return Status::InvalidArgument("more than 256 hook patterns");
  KeyInfo k;
  k.name = std::string(name);
  HOOKFS_ASSIGN_OR_RETURN(k.public_key, PublicKey::FromPem(pk->get<std::string>()));
  k.key_id = k.public_key.KeyId().Hex();
  for (const json& p : *hooks) {
    if (!p.is_string()) return Status::InvalidArgument("hook patterns must be strings");
    HOOKFS_RETURN_IF_ERROR(ValidateHookPattern(p.get<std::string>()));
    k.hooks.push_back(p.get<std::string>());
  }
  if (auto id = j.find("key_id"); id != j.end() && (!id->is_string() || id->get<std::string>() != k.key_id))
    return Status::InvalidArgument("key_id does not match the public key (it is " + k.key_id + ")");
  return k;
}

namespace keys_txn {

Result<std::vector<KeyInfo>> LoadAll(const Tables& t, const Txn& txn) {
  HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.keys));
  std::vector<KeyInfo> out;
  HOOKFS_ASSIGN_OR_RETURN(bool more, c.First());
  while (more) {
    HOOKFS_ASSIGN_OR_RETURN(KeyInfo k, DecodeKey(c.value()));
    out.push_back(std::move(k));
    HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
  }
  return out;
}

bool Pinned(const std::optional<HookInfo>& hook, std::string_view name, const std::vector<KeyInfo>& keys,
            bool require_signed) {
  if (require_signed || (hook && hook->pinned)) return true;
  return std::any_of(keys.begin(), keys.end(), [&](const KeyInfo& k) { return k.Covers(name); });
}

}  // namespace keys_txn

Result<KeyInfo> KeyRing::Add(std::string_view name, std::string_view document, const Actor& who) {
  HOOKFS_ASSIGN_OR_RETURN(KeyInfo k, ParseKeyDocument(name, document));
  const Tables& t = store_->tables();
  HOOKFS_ASSIGN_OR_RETURN(Txn txn, store_->BeginWrite());
  HOOKFS_ASSIGN_OR_RETURN(std::vector<KeyInfo> all, keys_txn::LoadAll(t, txn));
  bool replaces = false;
  for (const KeyInfo& o : all) {
    if (o.name == k.name) replaces = true;
    else if (o.key_id == k.key_id)
      return Status::InvalidArgument("this key is already trusted as '" + o.name + "' (key_id " + k.key_id + ")");
  }
  const int64_t now = NowMs() / 1000;
  k.added_at = now;
  k.added_by = who.uid;
  HOOKFS_RETURN_IF_ERROR(txn.Put(t.keys, k.name, EncodeKey(k)));
  // Every existing hook the key covers is pinned from now on, for good.
  std::vector<std::string> pinned;
  {
    std::vector<HookInfo> hooks;
    HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.hooks));
    HOOKFS_ASSIGN_OR_RETURN(bool more, c.First());
    while (more) {
      HOOKFS_ASSIGN_OR_RETURN(HookInfo h, ledger_txn::DecodeHookRecord(c.value()));
      if (!h.pinned && k.Covers(h.name)) hooks.push_back(std::move(h));
      HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
    }
    for (HookInfo& h : hooks) {
      h.pinned = true;
      HOOKFS_RETURN_IF_ERROR(ledger_txn::PutHook(t, txn, h));
      pinned.push_back(h.name);
    }
  }
  HOOKFS_RETURN_IF_ERROR(RecordKeyEvent(t, txn, replaces ? "replace" : "add", k, who, now, pinned));
  HOOKFS_RETURN_IF_ERROR(txn.Commit());
  return k;
}

Status KeyRing::Remove(std::string_view name, const Actor& who) {
  HOOKFS_RETURN_IF_ERROR(ValidateKeyName(name));
  const Tables& t = store_->tables();
  HOOKFS_ASSIGN_OR_RETURN(Txn txn, store_->BeginWrite());
  auto v = txn.Get(t.keys, name);
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound)) return Status::NotFound("no key '" + std::string(name) + "'");
    return v.status();
  }
  HOOKFS_ASSIGN_OR_RETURN(KeyInfo k, DecodeKey(*v));
  HOOKFS_RETURN_IF_ERROR(txn.Del(t.keys, name));
  HOOKFS_RETURN_IF_ERROR(RecordKeyEvent(t, txn, "remove", k, who, NowMs() / 1000, {}));
  return txn.Commit();
}

Result<KeyInfo> KeyRing::Get(std::string_view name) const {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  auto v = view.txn().Get(store_->tables().keys, name);
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound)) return Status::NotFound("no key '" + std::string(name) + "'");
    return v.status();
  }
  return DecodeKey(*v);
}

Result<std::vector<KeyInfo>> KeyRing::List() const {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  return keys_txn::LoadAll(store_->tables(), view.txn());
}

Result<std::vector<json>> KeyRing::History() const {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(view.txn(), store_->tables().key_history));
  std::vector<json> out;
  HOOKFS_ASSIGN_OR_RETURN(bool more, c.First());
  while (more) {
    json j = json::parse(c.value(), nullptr, false);
    if (j.is_discarded()) return Status::Corruption("key history record does not decode");
    out.push_back(std::move(j));
    HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
  }
  return out;
}

}  // namespace hookfs
