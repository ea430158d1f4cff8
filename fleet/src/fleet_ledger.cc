#include "hookfs/fleet_ledger.h"

#include <cstdio>
#include <cstring>
#include <random>

#include <spdlog/spdlog.h>

#include "hookfs/hash.h"

namespace hookfs {

namespace {

using Clock = std::chrono::steady_clock;

std::string Padded(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "%010u", v);
  return b;
}

std::optional<uint32_t> ParseVersion(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0 || v > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(v);
}

std::string RequestId() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char b[20];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(rng()));
  return b;
}

}  // namespace

std::string FleetKeys::Hook(std::string_view h) const { return prefix + "hooks/" + std::string(h); }
std::string FleetKeys::Seq(std::string_view h) const { return prefix + "seq/" + std::string(h); }
std::string FleetKeys::Release(std::string_view h, uint32_t v) const {
  return prefix + "releases/" + std::string(h) + "/" + Padded(v);
}
std::string FleetKeys::Digest(std::string_view h, const ObjectId& d) const {
  return prefix + "digests/" + std::string(h) + "/" + d.Hex();
}
std::string FleetKeys::Pointer(std::string_view h, std::string_view pointer) const {
  return prefix + "pointers/" + std::string(h) + "/" + std::string(pointer);
}

FleetLedger::FleetLedger(EtcdClient* etcd, S3Client* s3, FleetOptions options)
    : etcd_(etcd), s3_(s3), options_(std::move(options)), keys_(options_.fleet) {}

std::string FleetLedger::ObjectKey(const ObjectId& id) const {
  return options_.fleet + "/objects/" + id.Hex();
}

Result<ObjectId> FleetLedger::UploadObject(std::string_view bytes) {
  ObjectId id = Sha256::Of(bytes);
  std::string key = ObjectKey(id);
  Status s;
  if (bytes.size() > S3Client::kDefaultPartSize) {
    s = s3_->PutParts(key, bytes.size(), [&](uint64_t off, char* buf, size_t len) {
      std::memcpy(buf, bytes.data() + off, len);
      return Status::OK();
    });
  } else {
    s = s3_->PutIfAbsent(key, bytes);
  }
  if (!s.ok()) return s.Context("upload " + id.ShortHex());
  return id;
}

Result<std::string> FleetLedger::FetchObject(const ObjectId& id) {
  std::string key = ObjectKey(id);
  auto got = s3_->Get(key);
  std::string bytes;
  if (got.ok()) {
    bytes = std::move(*got);
  } else if (got.status().Is(Code::kNotFound)) {
    // A large object exists only as parts (and its manifest).
    Status s = s3_->GetParts(key, [&](uint64_t, std::string_view part) {
      bytes.append(part);
      return Status::OK();
    });
    if (!s.ok()) return s.Context("fetch " + id.ShortHex());
  } else {
    return got.status().Context("fetch " + id.ShortHex());
  }
  ObjectId actual = Sha256::Of(bytes);
  if (actual != id) {
    spdlog::error("fleet {}: object {} from the bucket hashes to {} ({} bytes): refused", options_.fleet,
                  id.Hex(), actual.Hex(), bytes.size());
    return Status::Corruption("object " + id.ShortHex() + " from the bucket does not match its id");
  }
  return bytes;
}

Result<FleetPublish> FleetLedger::AssignVersion(std::string_view hook, const ObjectId& digest,
                                                nlohmann::json record, bool advance) {
  const auto deadline = Clock::now() + options_.budget;
  const std::string seq_key = keys_.Seq(hook), digest_key = keys_.Digest(hook, digest);
  record["hook"] = std::string(hook);
  record["digest"] = digest.Hex();
  record["host"] = options_.host;
  record["request"] = RequestId();
  FleetPublish out;
  while (true) {
    if (Clock::now() >= deadline) {
      return Status::TimedOut("publish " + std::string(hook) + ": no version assigned within the budget");
    }
    // One read at one revision: the sequence and the digest index.
    auto read = etcd_->Txn({}, {TxnOp::Get(seq_key), TxnOp::Get(digest_key)});
    if (!read.ok()) return read.status().Context("publish " + std::string(hook));
    const RangeResult& seq = read->ranges.at(0);
    const RangeResult& dup = read->ranges.at(1);
    if (!dup.kvs.empty()) {
      auto v = ParseVersion(dup.kvs[0].value);
      if (!v) return Status::Corruption("etcd " + digest_key + ": not a version");
      out.version = *v;
      out.duplicate = true;
      out.revision = read->revision;
      return out;
    }
    uint32_t last = 0;
    std::vector<Compare> cmp;
    if (seq.kvs.empty()) {
      cmp.push_back(Compare::Absent(seq_key));
    } else {
      auto v = ParseVersion(seq.kvs[0].value);
      if (!v) return Status::Corruption("etcd " + seq_key + ": not a version");
      last = *v;
      cmp.push_back(Compare::ModRevision(seq_key, Compare::Op::kEqual, seq.kvs[0].mod_revision));
    }
    if (last == UINT32_MAX) return Status::NoSpace("hook " + std::string(hook) + ": versions exhausted");
    cmp.push_back(Compare::Absent(digest_key));
    const uint32_t n = last + 1;
    record["version"] = n;
    std::vector<TxnOp> ops = {TxnOp::Put(seq_key, std::to_string(n)),
                              TxnOp::Put(keys_.Release(hook, n), record.dump()),
                              TxnOp::Put(digest_key, std::to_string(n))};
    // The hook record is born with version 1: seq and hook exist together.
    if (n == 1) {
      nlohmann::json h = {{"name", std::string(hook)}, {"created_by_host", options_.host}};
      if (record.contains("created_at")) h["created_at"] = record["created_at"];
      ops.push_back(TxnOp::Put(keys_.Hook(hook), h.dump()));
    }
    if (advance) ops.push_back(TxnOp::Put(keys_.Pointer(hook, "live"), std::to_string(n)));
    ++out.attempts;
    auto txn = etcd_->Txn(cmp, ops);
    if (!txn.ok()) {
      if (txn.status().Is(Code::kTimedOut)) {
        spdlog::warn("fleet {}: publish of {} {}: etcd did not answer; outcome unknown, the watch decides",
                     options_.fleet, hook, digest.ShortHex());
      }
      return txn.status().Context("publish " + std::string(hook));
    }
    if (txn->succeeded) {
      out.version = n;
      out.revision = txn->revision;
      return out;
    }
    // Another host published meanwhile: read again.
  }
}

Result<int64_t> FleetLedger::MovePointer(std::string_view hook, std::string_view pointer, uint32_t to) {
  if (pointer != "live" && pointer.rfind("tags/", 0) != 0) {
    return Status::InvalidArgument("pointer " + std::string(pointer));
  }
  if (to == 0 && pointer == "live") return Status::NotPermitted("live cannot be removed");
  const auto deadline = Clock::now() + options_.budget;
  const std::string key = keys_.Pointer(hook, pointer);
  const std::string rel = to ? keys_.Release(hook, to) : std::string();
  while (true) {
    if (Clock::now() >= deadline) {
      return Status::TimedOut("move " + std::string(hook) + "/" + std::string(pointer) + ": within the budget");
    }
    std::vector<TxnOp> reads = {TxnOp::Get(key)};
    if (to) reads.push_back(TxnOp::Get(rel));
    auto read = etcd_->Txn({}, reads);
    if (!read.ok()) return read.status().Context("move " + std::string(hook));
    if (to && read->ranges.at(1).kvs.empty()) {
      return Status::InvalidArgument(std::string(hook) + " has no release " + std::to_string(to));
    }
    const auto& cur = read->ranges.at(0);
    std::vector<Compare> cmp;
    if (cur.kvs.empty()) {
      if (to == 0) return Status::NotFound(std::string(hook) + "/" + std::string(pointer));
      cmp.push_back(Compare::Absent(key));
    } else {
      cmp.push_back(Compare::ModRevision(key, Compare::Op::kEqual, cur.kvs[0].mod_revision));
    }
    // The release must still exist when the move lands.
    if (to) cmp.push_back(Compare::CreateRevision(rel, Compare::Op::kGreater, 0));
    std::vector<TxnOp> ops = {to ? TxnOp::Put(key, std::to_string(to)) : TxnOp::Delete(key)};
    auto txn = etcd_->Txn(cmp, ops);
    if (!txn.ok()) return txn.status().Context("move " + std::string(hook));
    if (txn->succeeded) return txn->revision;
    // Lost to another move: last writer wins, as ln -sfn does on one host.
  }
}

Result<std::optional<uint32_t>> FleetLedger::GetPointer(std::string_view hook, std::string_view pointer) {
  auto r = etcd_->Get(keys_.Pointer(hook, pointer));
  if (!r.ok()) return r.status();
  if (r->kvs.empty()) return std::optional<uint32_t>();
  auto v = ParseVersion(r->kvs[0].value);
  if (!v) return Status::Corruption("pointer value " + r->kvs[0].value);
  return std::optional<uint32_t>(*v);
}

Result<nlohmann::json> FleetLedger::GetRelease(std::string_view hook, uint32_t version) {
  auto r = etcd_->Get(keys_.Release(hook, version));
  if (!r.ok()) return r.status();
  if (r->kvs.empty()) return Status::NotFound(std::string(hook) + "/" + std::to_string(version));
  auto j = nlohmann::json::parse(r->kvs[0].value, nullptr, false);
  if (j.is_discarded()) return Status::Corruption("release record of " + std::string(hook));
  return j;
}

std::optional<FleetChange> FleetLedger::Decode(const KeyValue& kv, bool deleted) const {
  if (kv.key.rfind(keys_.prefix, 0) != 0) return std::nullopt;
  std::string_view rest = std::string_view(kv.key).substr(keys_.prefix.size());
  auto take = [&](std::string_view& s) {
    size_t p = s.find('/');
    std::string_view head = s.substr(0, p);
    s = p == std::string_view::npos ? std::string_view() : s.substr(p + 1);
    return head;
  };
  std::string_view kind = take(rest);
  std::string_view hook = take(rest);
  if (hook.empty() || rest.empty()) return std::nullopt;
  FleetChange c;
  c.hook = std::string(hook);
  c.revision = kv.mod_revision;
  if (kind == "releases") {
    if (deleted) return std::nullopt;  // releases are never deleted by the protocol (gc: not done)
    auto v = ParseVersion(rest);
    if (!v) return std::nullopt;
    auto j = nlohmann::json::parse(kv.value, nullptr, false);
    if (j.is_discarded()) {
      spdlog::error("fleet {}: undecodable release record {}", options_.fleet, kv.key);
      return std::nullopt;
    }
    c.kind = FleetChange::Kind::kRelease;
    c.version = *v;
    c.record = std::move(j);
    return c;
  }
  if (kind == "pointers") {
    c.kind = FleetChange::Kind::kPointer;
    c.pointer = std::string(rest);
    if (!deleted) {
      auto v = ParseVersion(kv.value);
      if (!v) return std::nullopt;
      c.version = *v;
    }
    return c;
  }
  return std::nullopt;
}

FleetFollower::FleetFollower(FleetLedger* ledger, int64_t applied_revision)
    : ledger_(ledger), revision_(applied_revision) {}

FleetFollower::~FleetFollower() = default;

Result<FleetBatch> FleetFollower::Snapshot() {
  auto all = ledger_->etcd()->GetPrefix(ledger_->keys().prefix);
  if (!all.ok()) return all.status().Context("fleet snapshot");
  FleetBatch b;
  b.full = true;
  b.revision = all->revision;
  for (const auto& kv : all->kvs) {
    if (auto c = ledger_->Decode(kv, false)) b.changes.push_back(std::move(*c));
  }
  revision_ = all->revision;
  return b;
}

Result<FleetBatch> FleetFollower::Next(std::chrono::milliseconds wait) {
  if (revision_ == 0) return Snapshot();
  if (!watch_) {
    WatchOptions w;
    w.key = ledger_->keys().prefix;
    w.prefix = true;
    w.start_revision = revision_ + 1;
    auto opened = ledger_->etcd()->Watch(w);
    if (!opened.ok()) {
      // A compacted start revision may be refused at creation: re-read all.
      if (opened.status().Is(Code::kInvalidArgument) &&
          opened.status().message().find("compact") != std::string::npos) {
        return Snapshot();
      }
      return opened.status();
    }
    watch_ = std::move(*opened);
  }
  auto got = watch_->Next(wait);
  FleetBatch b;
  b.revision = revision_;
  if (!got.ok()) {
    if (got.status().Is(Code::kTimedOut)) return b;
    watch_.reset();
    return got.status();
  }
  if (got->compact_revision > 0) {
    watch_.reset();
    spdlog::warn("fleet {}: revision {} was compacted (at {}): re-reading everything",
                 ledger_->options().fleet, revision_ + 1, got->compact_revision);
    return Snapshot();
  }
  for (const auto& e : got->events) {
    if (auto c = ledger_->Decode(e.kv, e.type == WatchEvent::Type::kDelete)) b.changes.push_back(std::move(*c));
    if (e.kv.mod_revision > b.revision) b.revision = e.kv.mod_revision;
  }
  revision_ = b.revision;
  return b;
}

}  // namespace hookfs
