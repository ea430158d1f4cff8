#include "hookfs/retention.h"

#include <algorithm>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace hookfs {

using nlohmann::json;
using lmdb::Cursor;
using lmdb::Txn;

json PruneReport::ToJson() const {
  return {{"hooks", hooks}, {"releases", releases}, {"kept", kept}, {"pruned", pruned}};
}

json RetentionReport::ToJson() const { return {{"prune", prune.ToJson()}, {"gc", gc.ToJson()}}; }

std::string RetentionReport::Summary() const {
  std::ostringstream s;
  s << "retention: " << prune.hooks << " hooks, " << prune.releases << " releases; kept " << prune.kept
    << " whole, pruned " << prune.pruned.size();
  for (size_t i = 0; i < prune.pruned.size() && i < 20; ++i) s << (i ? " " : ": ") << prune.pruned[i];
  if (prune.pruned.size() > 20) s << " …";
  s << "\n" << gc.Summary();
  return s.str();
}

namespace {

bool HasPrefix(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// One hook's decision and its updates, in the caller's write txn.
Status PruneHook(const Tables& t, Txn& txn, const std::string& hook, const RetentionOptions& o, int64_t now,
                 PruneReport* rep) {
  const std::string prefix = ledger_txn::HookPrefix(hook);
  std::vector<ReleaseInfo> rels;
  {
    HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.releases));
    HOOKFS_ASSIGN_OR_RETURN(bool more, c.Seek(prefix));
    while (more && HasPrefix(c.key(), prefix)) {
      HOOKFS_ASSIGN_OR_RETURN(ReleaseInfo r, ledger_txn::DecodeReleaseRecord(c.value()));
      rels.push_back(std::move(r));
      HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
    }
  }
  std::set<uint32_t> keep;
  {
    HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.pointers));  // live and every tag
    HOOKFS_ASSIGN_OR_RETURN(bool more, c.Seek(prefix));
    while (more && HasPrefix(c.key(), prefix)) {
      if (c.value().size() != 4) return Status::Corruption("pointer record of hook '" + hook + "'");
      keep.insert(lmdb::GetBE32(c.value().data()));
      HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
    }
  }
  {
    HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.runs));
    HOOKFS_ASSIGN_OR_RETURN(bool more, c.Seek(prefix));
    while (more && HasPrefix(c.key(), prefix)) {
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, ledger_txn::DecodeRunRecord(c.value()));
      if (!r.sealed() || r.finished_at >= now - o.recent_run_s) keep.insert(r.version);
      HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
    }
  }
  uint32_t newest = 0;  // the newest `keep` releases not pruned yet
  for (auto it = rels.rbegin(); it != rels.rend() && newest < o.keep; ++it)
    if (!it->pruned) {
      keep.insert(it->version);
      ++newest;
    }
  rep->releases += rels.size();
  for (ReleaseInfo& r : rels) {
    if (r.pruned) continue;
    if (keep.count(r.version)) {
      ++rep->kept;
      continue;
    }
    r.pruned = true;
    HOOKFS_RETURN_IF_ERROR(ledger_txn::PutRelease(t, txn, r));
    const std::string dkey = prefix + std::string(r.digest.AsKey());
    auto d = txn.Get(t.digests, dkey);
    if (d.ok() && d->size() == 4 && lmdb::GetBE32(d->data()) == r.version) {
      HOOKFS_RETURN_IF_ERROR(txn.Del(t.digests, dkey));
    } else if (!d.ok() && !d.status().Is(Code::kNotFound)) {
      return d.status();
    }
    HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(
        t, txn, {{"event", "prune"}, {"time", FormatTime(now)}, {"hook", hook}, {"version", r.version},
                 {"digest", r.digest.Hex()}, {"keep", o.keep}, {"uid", o.actor.uid}}));
    rep->pruned.push_back(hook + "/" + std::to_string(r.version));
  }
  return Status::OK();
}

}  // namespace

Result<PruneReport> PruneReleases(Store* store, const RetentionOptions& o) {
  if (o.keep == 0) return Status::InvalidArgument("keep must be at least 1");
  const Tables& t = store->tables();
  std::vector<std::string> hooks;
  {
    HOOKFS_ASSIGN_OR_RETURN(ReadView view, store->Read());
    HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(view.txn(), t.hooks));
    HOOKFS_ASSIGN_OR_RETURN(bool more, c.First());
    while (more) {
      hooks.emplace_back(c.key());
      HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
    }
  }
  PruneReport rep;
  rep.hooks = hooks.size();
  // One short write txn per hook: the decision reads pointers and runs in
  // the txn that writes it, and other writers wait for one hook at most.
  for (const std::string& hook : hooks) {
    HOOKFS_ASSIGN_OR_RETURN(Txn txn, store->BeginWrite());
    const int64_t now = o.now ? o.now : NowMs() / 1000;
    const size_t before = rep.pruned.size();
    HOOKFS_RETURN_IF_ERROR(PruneHook(t, txn, hook, o, now, &rep));
    if (rep.pruned.size() == before) continue;  // nothing written: the txn aborts
    HOOKFS_RETURN_IF_ERROR(store->Inject("prune_commit"));
    HOOKFS_RETURN_IF_ERROR(txn.Commit().Context("prune " + hook));
  }
  return rep;
}

Result<RetentionReport> ApplyRetention(Store* store, const RetentionOptions& o, const GcOptions& gc) {
  RetentionReport rep;
  HOOKFS_ASSIGN_OR_RETURN(rep.prune, PruneReleases(store, o));
  HOOKFS_ASSIGN_OR_RETURN(rep.gc, CollectGarbage(store, gc));
  return rep;
}

}  // namespace hookfs
