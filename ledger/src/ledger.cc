#include "hookfs/ledger.h"

#include <pwd.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>

#include <nlohmann/json.hpp>

namespace hookfs {

using nlohmann::json;
using lmdb::Cursor;
using lmdb::Txn;

// ---- values ------------------------------------------------------------------

Actor Actor::Current() {
  Actor a;
  a.uid = ::geteuid();
  char buf[4096];
  struct passwd pw, *res = nullptr;
  if (::getpwuid_r(a.uid, &pw, buf, sizeof buf, &res) == 0 && res) a.name = res->pw_name;
  else a.name = std::to_string(a.uid);
  return a;
}

int64_t NowMs() {
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  return int64_t(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

std::string HostName() {
  char b[256] = {};
  if (::gethostname(b, sizeof b - 1) != 0 || !b[0]) return "localhost";
  return b;
}

std::string FormatTime(int64_t t) {
  if (t == 0) return "";
  time_t tt = time_t(t);
  struct tm tm;
  ::gmtime_r(&tt, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return b;
}

std::string DumpJson(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

json SafeJson(const json& j) { return json::parse(DumpJson(j)); }

json ToJson(const HookInfo& h) {
  return {{"name", h.name}, {"feature", h.feature}, {"created_at", FormatTime(h.created_at)},
          {"created_by", h.created_by}, {"pinned", h.pinned}};
}

namespace {
json SignedByJson(const std::optional<SignedBy>& s) {
  return s ? json{{"key", s->key}, {"key_id", s->key_id}} : json(nullptr);
}
std::optional<SignedBy> SignedByFrom(const json& j) {
  if (j.is_null()) return std::nullopt;
  return SignedBy{j.at("key").get<std::string>(), j.at("key_id").get<std::string>()};
}
}  // namespace

json ToJson(const ReleaseInfo& r) {
  return {{"hook", r.hook},
          {"version", r.version},
          {"digest", r.digest.Hex()},
          {"source_ref", r.source_ref},
          {"message", r.message},
          {"published_by", r.published_by},
          {"created_at", FormatTime(r.created_at)},
          {"committed_at", FormatTime(r.committed_at)},
          {"files", r.files},
          {"bytes", r.bytes},
          {"damaged", r.damaged},
          {"signed_by", SignedByJson(r.signed_by)},
          {"pruned", r.pruned}};
}

json ToJson(const PointerMove& m) {
  json j = {{"time", FormatTime(m.time)}, {"uid", m.uid}, {"pointer", m.pointer}};
  j["from"] = m.from ? json(m.from) : json(nullptr);
  j["to"] = m.to ? json(m.to) : json(nullptr);
  return j;
}

json ToJson(const RunInfo& r) {
  json j = {{"hook", r.hook},
            {"run", r.run},
            {"version", r.version},
            {"digest", r.digest.Hex()},
            {"feature", r.feature},
            {"source_ref", r.source_ref},
            {"host", r.host},
            {"started_at", FormatTime(r.started_at)},
            {"started_by", r.started_by},
            {"status", r.status}};
  j["finished_at"] = r.sealed() ? json(FormatTime(r.finished_at)) : json(nullptr);
  j["duration_s"] = r.sealed() ? json(r.duration_s) : json(nullptr);
  j["exit_code"] = r.sealed() ? json(r.exit_code) : json(nullptr);
  j["oom_retries"] = r.sealed() ? json(r.oom_retries) : json(nullptr);
  j["note"] = r.note;
  return j;
}

namespace {

// Stored records: JSON with raw integer times, decoded without exceptions
// escaping (a record that does not decode is Corruption).
std::string Encode(const HookInfo& h) {
  return DumpJson(json{{"name", h.name}, {"feature", h.feature}, {"created_at", h.created_at}, {"created_by", h.created_by},
                       {"pinned", h.pinned}});
}
std::string Encode(const ReleaseInfo& r) {
  return DumpJson(json{{"hook", r.hook}, {"version", r.version}, {"digest", r.digest.Hex()},
              {"source_ref", r.source_ref}, {"message", r.message}, {"published_by", r.published_by},
              {"created_at", r.created_at}, {"committed_at", r.committed_at}, {"files", r.files},
              {"bytes", r.bytes}, {"damaged", r.damaged}, {"signed_by", SignedByJson(r.signed_by)},
              {"pruned", r.pruned}});
}
std::string Encode(const PointerMove& m) {
  return DumpJson(json{{"seq", m.seq}, {"time", m.time}, {"uid", m.uid}, {"pointer", m.pointer}, {"from", m.from}, {"to", m.to}});
}
std::string Encode(const RunInfo& r) {
  return DumpJson(json{{"hook", r.hook}, {"run", r.run}, {"version", r.version}, {"digest", r.digest.Hex()},
              {"feature", r.feature}, {"source_ref", r.source_ref}, {"host", r.host},
              {"started_at", r.started_at}, {"started_ms", r.started_ms}, {"started_by", r.started_by},
              {"status", r.status}, {"finished_at", r.finished_at}, {"duration_s", r.duration_s},
              {"exit_code", r.exit_code}, {"oom_retries", r.oom_retries}, {"note", r.note}});
}

template <typename T, typename F>
Result<T> DecodeWith(std::string_view bytes, const char* what, F fill) {
  try {
    json j = json::parse(bytes);
    T v;
    fill(j, v);
    return v;
  } catch (const std::exception& e) {
    return Status::Corruption(std::string(what) + " record does not decode: " + e.what());
  }
}

ObjectId HexId(const json& j) {
  auto id = ObjectId::FromHex(j.get<std::string>());
  if (!id) throw std::runtime_error("bad id");
  return *id;
}

Result<HookInfo> DecodeHook(std::string_view b) {
  return DecodeWith<HookInfo>(b, "hook", [](const json& j, HookInfo& h) {
    h.name = j.at("name");
    h.feature = j.at("feature");
    h.created_at = j.at("created_at");
    h.created_by = j.at("created_by");
    h.pinned = j.value("pinned", false);
  });
}
Result<ReleaseInfo> DecodeRelease(std::string_view b) {
  return DecodeWith<ReleaseInfo>(b, "release", [](const json& j, ReleaseInfo& r) {
    r.hook = j.at("hook");
    r.version = j.at("version");
    r.digest = HexId(j.at("digest"));
    r.source_ref = j.at("source_ref");
    r.message = j.at("message");
    r.published_by = j.at("published_by");
    r.created_at = j.at("created_at");
    r.committed_at = j.at("committed_at");
    r.files = j.at("files");
    r.bytes = j.at("bytes");
    r.damaged = j.value("damaged", false);
    if (auto s = j.find("signed_by"); s != j.end()) r.signed_by = SignedByFrom(*s);
    r.pruned = j.value("pruned", false);
  });
}
Result<PointerMove> DecodeMove(std::string_view b) {
  return DecodeWith<PointerMove>(b, "history", [](const json& j, PointerMove& m) {
    m.seq = j.at("seq");
    m.time = j.at("time");
    m.uid = j.at("uid");
    m.pointer = j.at("pointer");
    m.from = j.at("from");
    m.to = j.at("to");
  });
}
Result<RunInfo> DecodeRun(std::string_view b) {
  return DecodeWith<RunInfo>(b, "run", [](const json& j, RunInfo& r) {
    r.hook = j.at("hook");
    r.run = j.at("run");
    r.version = j.at("version");
    r.digest = HexId(j.at("digest"));
    r.feature = j.value("feature", "");
    r.source_ref = j.value("source_ref", "");
    r.host = j.value("host", "");
    r.started_at = j.at("started_at");
    r.started_ms = j.value("started_ms", int64_t(0));
    r.started_by = j.at("started_by");
    r.status = j.at("status");
    r.finished_at = j.at("finished_at");
    r.duration_s = j.at("duration_s");
    r.exit_code = j.at("exit_code");
    r.oom_retries = j.at("oom_retries");
    r.note = j.at("note");
  });
}

bool HasPrefix(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string Key(std::string_view hook, std::string_view rest) {
  std::string k = ledger_txn::HookPrefix(hook);
  k += rest;
  return k;
}

Status CheckPointerName(std::string_view pointer) {
  if (pointer == "live") return Status::OK();
  if (HasPrefix(pointer, "tags/")) return ValidateTagName(pointer.substr(5));
  return Status::InvalidArgument("unknown pointer '" + std::string(pointer) + "'");
}

}  // namespace

Status ValidateRunName(std::string_view run) {
  auto ok = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  };
  if (run.empty() || run.size() > 64 || !std::all_of(run.begin(), run.end(), ok) || run == "." || run == "..")
    return Status::InvalidArgument("bad run name '" + std::string(run.substr(0, 80)) +
                                   "': must match [A-Za-z0-9._-]{1,64}");
  return Status::OK();
}

Status ValidateTagName(std::string_view tag) {
  Status st = ValidateHookName(tag);
  if (!st.ok()) return Status::InvalidArgument("bad tag name '" + std::string(tag.substr(0, 80)) +
                                               "': must match [a-z0-9][a-z0-9._-]{0,63}");
  return st;
}

Result<RunResult> RunResult::FromJson(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Status::InvalidArgument("run result is not a JSON object");
  RunResult r;
  auto st = j.find("status");
  if (st == j.end() || !st->is_string()) return Status::InvalidArgument("run result needs a \"status\" string");
  r.status = st->get<std::string>();
  if (r.status != "succeeded" && r.status != "failed" && r.status != "cancelled" && r.status != "timed_out")
    return Status::InvalidArgument("run status '" + r.status + "' is not one of succeeded, failed, cancelled, timed_out");
  if (auto e = j.find("exit_code"); e != j.end()) {
    if (!e->is_number_integer()) return Status::InvalidArgument("exit_code must be an integer");
    r.exit_code = e->get<int64_t>();
  }
  if (auto o = j.find("oom_retries"); o != j.end()) {
    if (!o->is_number_integer() || o->get<int64_t>() < 0)
      return Status::InvalidArgument("oom_retries must be a non-negative integer");
    r.oom_retries = o->get<int64_t>();
  }
  if (auto n = j.find("note"); n != j.end()) {
    if (!n->is_string() || n->get<std::string>().size() > 4096)
      return Status::InvalidArgument("note must be a string of at most 4096 bytes");
    r.note = n->get<std::string>();
  }
  return r;
}

// ---- in-txn helpers -------------------------------------------------------------

namespace ledger_txn {

std::string HookPrefix(std::string_view hook) {
  std::string k(hook);
  k.push_back('\0');
  return k;
}

std::string ReleaseKey(std::string_view hook, uint32_t version) {
  std::string k = HookPrefix(hook);
  lmdb::PutBE32(&k, version);
  return k;
}

Result<std::optional<HookInfo>> GetHook(const Tables& t, const Txn& txn, std::string_view hook) {
  auto v = txn.Get(t.hooks, hook);
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound)) return std::optional<HookInfo>();
    return v.status();
  }
  HOOKFS_ASSIGN_OR_RETURN(HookInfo h, DecodeHook(*v));
  return std::optional<HookInfo>(std::move(h));
}

Status PutHook(const Tables& t, Txn& txn, const HookInfo& h) { return txn.Put(t.hooks, h.name, Encode(h)); }

Result<uint32_t> LastVersion(const Tables& t, const Txn& txn, std::string_view hook) {
  const std::string prefix = HookPrefix(hook);
  HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.releases));
  HOOKFS_ASSIGN_OR_RETURN(bool found, c.Seek(ReleaseKey(hook, 0xffffffffu) + '\xff'));
  HOOKFS_ASSIGN_OR_RETURN(bool back, found ? c.Prev() : c.Last());
  if (!back || !HasPrefix(c.key(), prefix) || c.key().size() != prefix.size() + 4) return 0u;
  return lmdb::GetBE32(c.key().data() + prefix.size());
}

Result<std::optional<uint32_t>> FindDigest(const Tables& t, const Txn& txn, std::string_view hook,
                                           const ObjectId& digest) {
  auto v = txn.Get(t.digests, Key(hook, digest.AsKey()));
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound)) return std::optional<uint32_t>();
    return v.status();
  }
  if (v->size() != 4) return Status::Corruption("digest index record");
  return std::optional<uint32_t>(lmdb::GetBE32(v->data()));
}

Status PutRelease(const Tables& t, Txn& txn, const ReleaseInfo& r) {
  HOOKFS_RETURN_IF_ERROR(txn.Put(t.releases, ReleaseKey(r.hook, r.version), Encode(r)));
  // A pruned release is out of the digest index: its content published
  // again mints a new version (DESIGN.md §7).
  if (r.pruned) return Status::OK();
  std::string v;
  lmdb::PutBE32(&v, r.version);
  return txn.Put(t.digests, Key(r.hook, r.digest.AsKey()), v);
}

Result<std::optional<uint32_t>> GetPointer(const Tables& t, const Txn& txn, std::string_view hook,
                                           std::string_view pointer) {
  auto v = txn.Get(t.pointers, Key(hook, pointer));
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound)) return std::optional<uint32_t>();
    return v.status();
  }
  if (v->size() != 4) return Status::Corruption("pointer record");
  return std::optional<uint32_t>(lmdb::GetBE32(v->data()));
}

Status AppendJournal(const Tables& t, Txn& txn, const json& event) {
  HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.journal));
  HOOKFS_ASSIGN_OR_RETURN(bool any, c.Last());
  uint64_t seq = any && c.key().size() == 8 ? lmdb::GetBE64(c.key().data()) + 1 : 1;
  json line = {{"seq", seq}};
  line.update(event);
  std::string k;
  lmdb::PutBE64(&k, seq);
  return txn.Put(t.journal, k, DumpJson(line));
}

Result<HookInfo> DecodeHookRecord(std::string_view b) { return DecodeHook(b); }
Result<ReleaseInfo> DecodeReleaseRecord(std::string_view b) { return DecodeRelease(b); }
Result<PointerMove> DecodeHistoryRecord(std::string_view b) { return DecodeMove(b); }
Result<RunInfo> DecodeRunRecord(std::string_view b) { return DecodeRun(b); }

Status MovePointer(const Tables& t, Txn& txn, std::string_view hook, std::string_view pointer, uint32_t to,
                   const Actor& who, int64_t now) {
  HOOKFS_RETURN_IF_ERROR(CheckPointerName(pointer));
  HOOKFS_ASSIGN_OR_RETURN(std::optional<uint32_t> from, GetPointer(t, txn, hook, pointer));
  if (from.value_or(0) == to) return Status::OK();  // not a move
  if (to == 0) {
    HOOKFS_RETURN_IF_ERROR(txn.Del(t.pointers, Key(hook, pointer)));
  } else {
    std::string v;
    lmdb::PutBE32(&v, to);
    HOOKFS_RETURN_IF_ERROR(txn.Put(t.pointers, Key(hook, pointer), v));
  }
  PointerMove m;
  m.time = now;
  m.uid = who.uid;
  m.pointer = std::string(pointer);
  m.from = from.value_or(0);
  m.to = to;
  {
    const std::string prefix = HookPrefix(hook);
    HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.history));
    std::string after = prefix;
    after.append(8, '\xff');
    HOOKFS_ASSIGN_OR_RETURN(bool found, c.Seek(after));
    HOOKFS_ASSIGN_OR_RETURN(bool back, found ? c.Prev() : c.Last());
    m.seq = back && HasPrefix(c.key(), prefix) && c.key().size() == prefix.size() + 8
                ? lmdb::GetBE64(c.key().data() + prefix.size()) + 1
                : 1;
  }
  std::string k = HookPrefix(hook);
  lmdb::PutBE64(&k, m.seq);
  HOOKFS_RETURN_IF_ERROR(txn.Put(t.history, k, Encode(m)));
  json ev = ToJson(m);
  ev["event"] = "pointer";
  ev["hook"] = std::string(hook);
  ev.erase("time");
  ev["time"] = FormatTime(now);
  return AppendJournal(t, txn, ev);
}

}  // namespace ledger_txn

// ---- Ledger -------------------------------------------------------------------

namespace {
template <typename T, typename Dec>
Result<std::vector<T>> ScanPrefix(const Store* s, MDB_dbi dbi, const std::string& prefix, Dec decode) {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, s->Read());
  HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(view.txn(), dbi));
  std::vector<T> out;
  // LMDB refuses an empty key (MDB_BAD_VALSIZE): the whole table starts at First.
  HOOKFS_ASSIGN_OR_RETURN(bool more, prefix.empty() ? c.First() : c.Seek(prefix));
  while (more && HasPrefix(c.key(), prefix)) {
    HOOKFS_ASSIGN_OR_RETURN(T v, decode(c.key(), c.value()));
    out.push_back(std::move(v));
    HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
  }
  return out;
}

Status NeedHook(const Tables& t, const Txn& txn, std::string_view hook) {
  HOOKFS_ASSIGN_OR_RETURN(std::optional<HookInfo> h, ledger_txn::GetHook(t, txn, hook));
  if (!h) return Status::NotFound("no hook '" + std::string(hook) + "'");
  return Status::OK();
}

Result<ReleaseInfo> GetReleaseIn(const Tables& t, const Txn& txn, std::string_view hook, uint32_t version) {
  auto v = txn.Get(t.releases, ledger_txn::ReleaseKey(hook, version));
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound))
      return Status::NotFound("hook '" + std::string(hook) + "' has no release " + std::to_string(version));
    return v.status();
  }
  return DecodeRelease(*v);
}
}  // namespace

Result<std::vector<HookInfo>> Ledger::ListHooks() const {
  return ScanPrefix<HookInfo>(store_, store_->tables().hooks, "",
                              [](std::string_view, std::string_view v) { return DecodeHook(v); });
}

Result<HookInfo> Ledger::GetHook(std::string_view hook) const {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  HOOKFS_ASSIGN_OR_RETURN(std::optional<HookInfo> h, ledger_txn::GetHook(store_->tables(), view.txn(), hook));
  if (!h) return Status::NotFound("no hook '" + std::string(hook) + "'");
  return *h;
}

Result<std::vector<ReleaseInfo>> Ledger::ListReleases(std::string_view hook) const {
  return ScanPrefix<ReleaseInfo>(store_, store_->tables().releases, ledger_txn::HookPrefix(hook),
                                 [](std::string_view, std::string_view v) { return DecodeRelease(v); });
}

Result<ReleaseInfo> Ledger::GetRelease(std::string_view hook, uint32_t version) const {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  return GetReleaseIn(store_->tables(), view.txn(), hook, version);
}

Result<std::optional<uint32_t>> Ledger::GetLive(std::string_view hook) const {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  return ledger_txn::GetPointer(store_->tables(), view.txn(), hook, "live");
}

Result<std::map<std::string, uint32_t>> Ledger::ListTags(std::string_view hook) const {
  const std::string prefix = Key(hook, "tags/");
  HOOKFS_ASSIGN_OR_RETURN(
      auto pairs, (ScanPrefix<std::pair<std::string, uint32_t>>(
                      store_, store_->tables().pointers, prefix,
                      [&](std::string_view k, std::string_view v) -> Result<std::pair<std::string, uint32_t>> {
                        if (v.size() != 4) return Status::Corruption("pointer record");
                        return std::make_pair(std::string(k.substr(prefix.size())), lmdb::GetBE32(v.data()));
                      })));
  return std::map<std::string, uint32_t>(pairs.begin(), pairs.end());
}

Result<std::vector<PointerMove>> Ledger::History(std::string_view hook) const {
  return ScanPrefix<PointerMove>(store_, store_->tables().history, ledger_txn::HookPrefix(hook),
                                 [](std::string_view, std::string_view v) { return DecodeMove(v); });
}

namespace {
Status MovePointerChecked(Store* s, std::string_view hook, std::string_view pointer, uint32_t version,
                          const Actor& who) {
  const Tables& t = s->tables();
  HOOKFS_ASSIGN_OR_RETURN(Txn txn, s->BeginWrite());
  HOOKFS_RETURN_IF_ERROR(NeedHook(t, txn, hook));
  auto rel = GetReleaseIn(t, txn, hook, version);
  if (!rel.ok()) {
    if (rel.status().Is(Code::kNotFound))
      return Status::InvalidArgument("hook '" + std::string(hook) + "' has no release " + std::to_string(version) +
                                     "; " + std::string(pointer) + " not moved");
    return rel.status();
  }
  if (rel->damaged)
    return Status::InvalidArgument("release " + std::to_string(version) + " of '" + std::string(hook) +
                                   "' is damaged; " + std::string(pointer) + " not moved");
  // Checked in the same txn that moves: retention prunes in a write txn too,
  // so a pointer never lands on a release whose files are going.
  if (rel->pruned)
    return Status::InvalidArgument("release " + std::to_string(version) + " of '" + std::string(hook) +
                                   "' was pruned (retention); " + std::string(pointer) + " not moved");
  HOOKFS_RETURN_IF_ERROR(ledger_txn::MovePointer(t, txn, hook, pointer, version, who, NowMs() / 1000));
  return txn.Commit();
}
}  // namespace

Status Ledger::MoveLive(std::string_view hook, uint32_t version, const Actor& who) {
  return MovePointerChecked(store_, hook, "live", version, who);
}

Status Ledger::SetTag(std::string_view hook, std::string_view tag, uint32_t version, const Actor& who) {
  HOOKFS_RETURN_IF_ERROR(ValidateTagName(tag));
  return MovePointerChecked(store_, hook, "tags/" + std::string(tag), version, who);
}

Status Ledger::RemoveTag(std::string_view hook, std::string_view tag, const Actor& who) {
  HOOKFS_RETURN_IF_ERROR(ValidateTagName(tag));
  const Tables& t = store_->tables();
  const std::string pointer = "tags/" + std::string(tag);
  HOOKFS_ASSIGN_OR_RETURN(Txn txn, store_->BeginWrite());
  HOOKFS_RETURN_IF_ERROR(NeedHook(t, txn, hook));
  HOOKFS_ASSIGN_OR_RETURN(std::optional<uint32_t> cur, ledger_txn::GetPointer(t, txn, hook, pointer));
  if (!cur) return Status::NotFound("hook '" + std::string(hook) + "' has no tag '" + std::string(tag) + "'");
  HOOKFS_RETURN_IF_ERROR(ledger_txn::MovePointer(t, txn, hook, pointer, 0, who, NowMs() / 1000));
  return txn.Commit();
}

Result<RunInfo> Ledger::StartRun(std::string_view hook, std::string_view run, const Actor& who,
                                 std::string_view host) {
  HOOKFS_RETURN_IF_ERROR(ValidateRunName(run));
  const Tables& t = store_->tables();
  HOOKFS_ASSIGN_OR_RETURN(Txn txn, store_->BeginWrite());
  HOOKFS_RETURN_IF_ERROR(NeedHook(t, txn, hook));
  HOOKFS_ASSIGN_OR_RETURN(bool taken, txn.Has(t.runs, Key(hook, run)));
  if (taken) return Status::Exists("hook '" + std::string(hook) + "' already has a run '" + std::string(run) + "'");
  HOOKFS_ASSIGN_OR_RETURN(std::optional<uint32_t> live, ledger_txn::GetPointer(t, txn, hook, "live"));
  if (!live) return Status::NotFound("hook '" + std::string(hook) + "' has no live release to run");
  HOOKFS_ASSIGN_OR_RETURN(ReleaseInfo rel, GetReleaseIn(t, txn, hook, *live));
  // Retention never prunes live's target; a store that says otherwise is damaged.
  if (rel.pruned)
    return Status::InvalidArgument("live release " + std::to_string(rel.version) + " of '" + std::string(hook) +
                                   "' was pruned; no run started");
  HOOKFS_ASSIGN_OR_RETURN(std::optional<HookInfo> hinfo, ledger_txn::GetHook(t, txn, hook));
  const int64_t now = NowMs();
  RunInfo r;
  r.hook = std::string(hook);
  r.run = std::string(run);
  r.version = rel.version;
  r.digest = rel.digest;
  r.feature = hinfo ? hinfo->feature : "";
  r.source_ref = rel.source_ref;
  r.host = host.empty() ? HostName() : std::string(host);
  r.started_at = now / 1000;
  r.started_ms = now;
  r.started_by = who.uid;
  HOOKFS_RETURN_IF_ERROR(txn.Put(t.runs, Key(hook, run), Encode(r)));
  json ev = {{"event", "run_start"}, {"time", FormatTime(r.started_at)}, {"hook", r.hook}, {"run", r.run},
             {"version", r.version}, {"uid", who.uid}};
  HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(t, txn, ev));
  HOOKFS_RETURN_IF_ERROR(txn.Commit());
  return r;
}

Result<RunInfo> Ledger::FinishRun(std::string_view hook, std::string_view run, const RunResult& result,
                                  const Actor& who) {
  const Tables& t = store_->tables();
  HOOKFS_ASSIGN_OR_RETURN(Txn txn, store_->BeginWrite());
  auto v = txn.Get(t.runs, Key(hook, run));
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound))
      return Status::NotFound("hook '" + std::string(hook) + "' has no run '" + std::string(run) + "'");
    return v.status();
  }
  HOOKFS_ASSIGN_OR_RETURN(RunInfo r, DecodeRun(*v));
  if (r.sealed())
    return Status::NotPermitted("run '" + r.run + "' of '" + r.hook + "' is already finished (" + r.status + ")");
  const int64_t now = NowMs();
  r.status = result.status;
  r.exit_code = result.exit_code;
  r.oom_retries = result.oom_retries;
  r.note = result.note;
  r.finished_at = now / 1000;
  r.duration_s = r.started_ms ? double(now - r.started_ms) / 1000.0 : double(r.finished_at - r.started_at);
  HOOKFS_RETURN_IF_ERROR(txn.Put(t.runs, Key(hook, run), Encode(r)));
  json ev = {{"event", "run_finish"}, {"time", FormatTime(r.finished_at)}, {"hook", r.hook}, {"run", r.run},
             {"version", r.version}, {"status", r.status}, {"exit_code", r.exit_code}, {"uid", who.uid}};
  HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(t, txn, ev));
  HOOKFS_RETURN_IF_ERROR(txn.Commit());
  return r;
}

Result<RunInfo> Ledger::GetRun(std::string_view hook, std::string_view run) const {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  auto v = view.txn().Get(store_->tables().runs, Key(hook, run));
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound))
      return Status::NotFound("hook '" + std::string(hook) + "' has no run '" + std::string(run) + "'");
    return v.status();
  }
  return DecodeRun(*v);
}

Result<std::vector<RunInfo>> Ledger::ListRuns(std::string_view hook) const {
  return ScanPrefix<RunInfo>(store_, store_->tables().runs, ledger_txn::HookPrefix(hook),
                             [](std::string_view, std::string_view v) { return DecodeRun(v); });
}

Status Ledger::ReadJournal(uint64_t from, const std::function<bool(uint64_t, std::string_view)>& fn) const {
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(view.txn(), store_->tables().journal));
  std::string k;
  lmdb::PutBE64(&k, from);
  HOOKFS_ASSIGN_OR_RETURN(bool more, c.Seek(k));
  while (more) {
    if (c.key().size() != 8) return Status::Corruption("journal key");
    if (!fn(lmdb::GetBE64(c.key().data()), c.value())) break;
    HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
  }
  return Status::OK();
}

}  // namespace hookfs
