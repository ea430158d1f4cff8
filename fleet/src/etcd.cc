// EtcdClient on gRPC C++ with the v3 protos Debian ships (docs/dependencies.md).
#include "hookfs/etcd.h"

#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace hookfs {
namespace {

namespace pb = etcdserverpb;
using Clock = std::chrono::system_clock;  // ClientContext::set_deadline takes system_clock
using std::chrono::milliseconds;

Result<std::string> ReadPem(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument("etcd: cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The end of the range of keys that start with prefix (etcd's convention).
std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(end.back());
    if (c < 0xff) {
      ++c;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

// The one place a gRPC status becomes a hookfs Status.
Status FromGrpc(const grpc::Status& s, const std::string& what, const std::string& endpoint) {
  std::string m = "etcd " + what + " (" + endpoint + "): " + s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::OK: return Status::OK();
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::UNAVAILABLE: return Status::TimedOut(m);
    case grpc::StatusCode::OUT_OF_RANGE:  // "required revision has been compacted"
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION: return Status::InvalidArgument(m);
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED: return Status::PermissionDenied(m);
    case grpc::StatusCode::NOT_FOUND: return Status::NotFound(m);
    default: return Status::IOError(m);
  }
}

KeyValue FromPb(const mvccpb::KeyValue& kv) {
  return {kv.key(), kv.value(), kv.create_revision(), kv.mod_revision(), kv.version(), kv.lease()};
}

RangeResult FromPb(const pb::RangeResponse& r) {
  RangeResult out;
  out.revision = r.header().revision();
  out.count = r.count();
  out.more = r.more();
  out.kvs.reserve(r.kvs_size());
  for (const auto& kv : r.kvs()) out.kvs.push_back(FromPb(kv));
  return out;
}

struct Endpoint {
  std::string url;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::KV::Stub> kv;
  std::unique_ptr<pb::Watch::Stub> watch;
  std::unique_ptr<pb::Lease::Stub> lease;
};

// ---------------------------------------------------------------- watch

class WatchImpl final : public EtcdWatch {
 public:
  WatchImpl(Endpoint& ep) : ep_(ep) {}
  ~WatchImpl() override {
    {
      std::lock_guard lk(mu_);
      closing_ = true;
    }
    ctx_.TryCancel();
    if (reader_.joinable()) reader_.join();
  }

  // Sends the create request and waits (until deadline) for etcd's answer.
  Status Start(const WatchOptions& o, Clock::time_point deadline) {
    stream_ = ep_.watch->Watch(&ctx_);
    pb::WatchRequest req;
    auto* c = req.mutable_create_request();
    c->set_key(o.key);
    if (o.prefix) c->set_range_end(PrefixEnd(o.key));
    c->set_start_revision(o.start_revision);
    c->set_progress_notify(o.progress_notify);
    {
      std::lock_guard wl(write_mu_);
      if (!stream_->Write(req)) {
        // The stream failed at once; Finish says why.
        grpc::Status s = stream_->Finish();
        finished_ = true;
        return FromGrpc(s.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed") : s,
                        "watch", ep_.url);
      }
    }
    reader_ = std::thread([this] { ReadLoop(); });
    std::unique_lock lk(mu_);
    if (!cv_.wait_until(lk, deadline, [&] { return created_ || ended_; })) {
      return Status::TimedOut("etcd watch (" + ep_.url + "): not confirmed before the deadline");
    }
    if (!created_) return end_status_;
    return Status::OK();
  }

  Result<WatchBatch> Next(milliseconds wait) override {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, wait, [&] { return !queue_.empty() || ended_; });
    if (!queue_.empty()) {
      WatchBatch b = std::move(queue_.front());
      queue_.pop_front();
      return b;
    }
    if (ended_) return end_status_;
    return Status::TimedOut("etcd watch: nothing within " + std::to_string(wait.count()) + " ms");
  }

  Status RequestProgress() override {
    pb::WatchRequest req;
    req.mutable_progress_request();
    std::lock_guard wl(write_mu_);
    {
      std::lock_guard lk(mu_);
      if (ended_) return end_status_;
    }
    if (finished_ || !stream_->Write(req))
      return Status::IOError("etcd watch (" + ep_.url + "): stream broken");
    return Status::OK();
  }

 private:
  void ReadLoop() {
    pb::WatchResponse r;
    while (stream_->Read(&r)) {
      std::lock_guard lk(mu_);
      if (r.created() && !created_) {
        created_ = true;
        if (r.canceled() && r.compact_revision() == 0) {
          End(Status::InvalidArgument("etcd watch (" + ep_.url + "): refused: " + r.cancel_reason()));
          break;
        }
        cv_.notify_all();
        if (r.events_size() == 0 && r.compact_revision() == 0) continue;
      }
      WatchBatch b;
      b.revision = r.header().revision();
      b.compact_revision = r.compact_revision();
      b.progress = r.events_size() == 0 && r.compact_revision() == 0 && !r.canceled();
      b.events.reserve(r.events_size());
      for (const auto& e : r.events()) {
        WatchEvent we;
        we.type = e.type() == mvccpb::Event::DELETE ? WatchEvent::Type::kDelete : WatchEvent::Type::kPut;
        we.kv = FromPb(e.kv());
        b.events.push_back(std::move(we));
      }
      if (b.compact_revision > 0) {
        queue_.push_back(std::move(b));
        End(Status::InvalidArgument("etcd watch (" + ep_.url + "): start revision compacted at " +
                                    std::to_string(r.compact_revision())));
        break;
      }
      if (r.canceled()) {
        End(Status::IOError("etcd watch (" + ep_.url + "): canceled by the server: " + r.cancel_reason()));
        break;
      }
      queue_.push_back(std::move(b));
      cv_.notify_all();
    }
    // The stream is over (server ended it, connection lost, or our cancel).
    // Cancel first, so that a Write blocked in RequestProgress returns, then
    // finish under the writers' lock: Finish must not run beside a Write.
    ctx_.TryCancel();
    grpc::Status s;
    {
      std::lock_guard wl(write_mu_);
      s = stream_->Finish();
      finished_ = true;
    }
    std::lock_guard lk(mu_);
    if (!ended_) {
      End(closing_ ? Status::IOError("etcd watch closed")
                   : Status::IOError("etcd watch (" + ep_.url + "): stream ended: " + s.error_message()));
    }
  }

  void End(Status s) {  // mu_ held
    ended_ = true;
    end_status_ = std::move(s);
    cv_.notify_all();
  }

  Endpoint& ep_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::WatchRequest, pb::WatchResponse>> stream_;
  std::mutex write_mu_;  // one writer at a time on the stream
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WatchBatch> queue_;
  bool created_ = false, ended_ = false, closing_ = false;  // mu_
  bool finished_ = false;                                    // write_mu_
  Status end_status_;
};

class ClientImpl;

// ---------------------------------------------------------------- lease keeper

class KeeperImpl final : public LeaseKeeper {
 public:
  KeeperImpl(ClientImpl& c, int64_t id, int64_t ttl) : client_(c), id_(id), ttl_(ttl) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~KeeperImpl() override {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  int64_t id() const override { return id_; }
  bool alive() const override { return alive_.load(); }

 private:
  void Loop();

  ClientImpl& client_;
  const int64_t id_, ttl_;
  std::atomic<bool> alive_{true};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------- client

class ClientImpl final : public EtcdClient {
 public:
  ClientImpl(std::vector<std::unique_ptr<Endpoint>> eps, milliseconds timeout)
      : eps_(std::move(eps)), timeout_(timeout),
        attempt_(std::max<milliseconds>(milliseconds(300), timeout / 3)) {}

  // Runs fn on the endpoints in turn (from the last good one) until one
  // answers or the deadline passes; moves on only when one is UNAVAILABLE.
  // Waits until ep's channel is connected, for at most a share of the time
  // left, so that a dead member leaves time for the others. Waiting on the
  // channel also drives its reconnect: a sync-API channel that failed once is
  // otherwise only polled by gRPC's 5 s backup poller, and with no RPC
  // waiting on it, a member that came back stayed unreachable.
  grpc::Status Connect(Endpoint& ep, Clock::time_point deadline) {
    if (ep.channel->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY) return grpc::Status::OK;
    auto share = std::max<Clock::duration>(milliseconds(200), timeout_ / (2 * eps_.size()));
    if (ep.channel->WaitForConnected(std::min(deadline, Clock::now() + share))) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "not connected");
  }

  template <typename Fn>
  Status Call(const std::string& what, Fn&& fn) {
    const auto deadline = Clock::now() + timeout_;
    const size_t start = current_.load();
    grpc::Status last;
    std::string last_url;
    for (size_t attempt = 0;; ++attempt) {
      const size_t i = (start + attempt) % eps_.size();
      grpc::Status s = Connect(*eps_[i], deadline);
      if (s.ok()) {
        // One attempt gets a third of the deadline: a request a member took
        // while its leader died waits for etcd's own timeout (> 5 s), it is
        // not re-proposed to the new leader; the next attempt is.
        grpc::ClientContext ctx;
        ctx.set_deadline(std::min(deadline, Clock::now() + attempt_));
        s = fn(*eps_[i], ctx);
      }
      if (s.ok()) {
        current_.store(i);
        return Status::OK();
      }
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
          s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED)
        return FromGrpc(s, what, eps_[i]->url);
      last = s;
      last_url = eps_[i]->url;
      auto now = Clock::now();
      if (now >= deadline) break;
      // A whole round refused at once (all members down): pause, don't spin.
      if ((attempt + 1) % eps_.size() == 0)
        std::this_thread::sleep_for(std::min<Clock::duration>(milliseconds(50), deadline - now));
    }
    return Status::TimedOut("etcd " + what + ": no endpoint answered within " +
                            std::to_string(timeout_.count()) + " ms (last " + last_url + ": " +
                            last.error_message() + ")");
  }

  Result<RangeResult> Range(const std::string& key, bool prefix, int64_t revision, bool serializable,
                            int64_t limit) {
    pb::RangeRequest req;
    req.set_key(key);
    if (prefix) req.set_range_end(PrefixEnd(key));
    req.set_revision(revision);
    req.set_serializable(serializable);
    req.set_limit(limit);
    pb::RangeResponse resp;
    HOOKFS_RETURN_IF_ERROR(Call("range " + key, [&](Endpoint& ep, grpc::ClientContext& ctx) {
      return ep.kv->Range(&ctx, req, &resp);
    }));
    return FromPb(resp);
  }

  Result<RangeResult> Get(const std::string& key, int64_t revision, bool serializable) override {
    return Range(key, false, revision, serializable, 0);
  }
  Result<RangeResult> GetPrefix(const std::string& prefix, int64_t revision, int64_t limit) override {
    return Range(prefix, true, revision, false, limit);
  }

  Result<int64_t> Put(const std::string& key, const std::string& value, int64_t lease) override {
    pb::PutRequest req;
    req.set_key(key);
    req.set_value(value);
    req.set_lease(lease);
    pb::PutResponse resp;
    HOOKFS_RETURN_IF_ERROR(Call("put " + key, [&](Endpoint& ep, grpc::ClientContext& ctx) {
      return ep.kv->Put(&ctx, req, &resp);
    }));
    return resp.header().revision();
  }

  Result<int64_t> Delete(const std::string& key, bool prefix) override {
    pb::DeleteRangeRequest req;
    req.set_key(key);
    if (prefix) req.set_range_end(PrefixEnd(key));
    pb::DeleteRangeResponse resp;
    HOOKFS_RETURN_IF_ERROR(Call("delete " + key, [&](Endpoint& ep, grpc::ClientContext& ctx) {
      return ep.kv->DeleteRange(&ctx, req, &resp);
    }));
    return resp.deleted();
  }

  static void AddOp(const TxnOp& op, pb::RequestOp* out) {
    switch (op.kind) {
      case TxnOp::Kind::kPut: {
        auto* p = out->mutable_request_put();
        p->set_key(op.key);
        p->set_value(op.value);
        p->set_lease(op.lease);
        break;
      }
      case TxnOp::Kind::kDelete: {
        auto* d = out->mutable_request_delete_range();
        d->set_key(op.key);
        if (op.prefix) d->set_range_end(PrefixEnd(op.key));
        break;
      }
      case TxnOp::Kind::kRange: {
        auto* r = out->mutable_request_range();
        r->set_key(op.key);
        if (op.prefix) r->set_range_end(PrefixEnd(op.key));
        break;
      }
    }
  }

  Result<TxnResult> Txn(const std::vector<Compare>& compares, const std::vector<TxnOp>& success,
                        const std::vector<TxnOp>& failure) override {
    pb::TxnRequest req;
    for (const auto& c : compares) {
      auto* pc = req.add_compare();
      pc->set_key(c.key);
      switch (c.op) {
        case Compare::Op::kEqual: pc->set_result(pb::Compare::EQUAL); break;
        case Compare::Op::kGreater: pc->set_result(pb::Compare::GREATER); break;
        case Compare::Op::kLess: pc->set_result(pb::Compare::LESS); break;
        case Compare::Op::kNotEqual: pc->set_result(pb::Compare::NOT_EQUAL); break;
      }
      switch (c.target) {
        case Compare::Target::kVersion:
          pc->set_target(pb::Compare::VERSION);
          pc->set_version(c.number);
          break;
        case Compare::Target::kCreateRevision:
          pc->set_target(pb::Compare::CREATE);
          pc->set_create_revision(c.number);
          break;
        case Compare::Target::kModRevision:
          pc->set_target(pb::Compare::MOD);
          pc->set_mod_revision(c.number);
          break;
        case Compare::Target::kValue:
          pc->set_target(pb::Compare::VALUE);
          pc->set_value(c.value);
          break;
      }
    }
    for (const auto& op : success) AddOp(op, req.add_success());
    for (const auto& op : failure) AddOp(op, req.add_failure());
    pb::TxnResponse resp;
    HOOKFS_RETURN_IF_ERROR(Call("txn", [&](Endpoint& ep, grpc::ClientContext& ctx) {
      return ep.kv->Txn(&ctx, req, &resp);
    }));
    TxnResult out;
    out.succeeded = resp.succeeded();
    out.revision = resp.header().revision();
    for (const auto& r : resp.responses())
      if (r.has_response_range()) out.ranges.push_back(FromPb(r.response_range()));
    return out;
  }

  Status Compact(int64_t revision) override {
    pb::CompactionRequest req;
    req.set_revision(revision);
    req.set_physical(true);  // return once the compaction is applied
    pb::CompactionResponse resp;
    return Call("compact", [&](Endpoint& ep, grpc::ClientContext& ctx) {
      return ep.kv->Compact(&ctx, req, &resp);
    });
  }

  Result<int64_t> LeaseGrant(int64_t ttl_seconds) override {
    pb::LeaseGrantRequest req;
    req.set_ttl(ttl_seconds);
    pb::LeaseGrantResponse resp;
    HOOKFS_RETURN_IF_ERROR(Call("lease grant", [&](Endpoint& ep, grpc::ClientContext& ctx) {
      return ep.lease->LeaseGrant(&ctx, req, &resp);
    }));
    if (!resp.error().empty()) return Status::IOError("etcd lease grant: " + resp.error());
    return resp.id();
  }

  Status LeaseRevoke(int64_t id) override {
    pb::LeaseRevokeRequest req;
    req.set_id(id);
    pb::LeaseRevokeResponse resp;
    return Call("lease revoke", [&](Endpoint& ep, grpc::ClientContext& ctx) {
      return ep.lease->LeaseRevoke(&ctx, req, &resp);
    });
  }

  Result<int64_t> LeaseKeepAliveOnce(int64_t id) override {
    pb::LeaseKeepAliveResponse resp;
    HOOKFS_RETURN_IF_ERROR(Call("lease keepalive", [&](Endpoint& ep, grpc::ClientContext& ctx) {
      auto stream = ep.lease->LeaseKeepAlive(&ctx);
      pb::LeaseKeepAliveRequest req;
      req.set_id(id);
      if (!stream->Write(req) || !stream->Read(&resp)) {
        grpc::Status s = stream->Finish();
        return s.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keepalive stream ended") : s;
      }
      stream->WritesDone();  // etcd ends the stream when we half-close
      return stream->Finish();
    }));
    if (resp.ttl() <= 0) return Status::NotFound("etcd lease " + std::to_string(id) + " expired");
    return resp.ttl();
  }

  Result<std::unique_ptr<LeaseKeeper>> KeepAlive(int64_t id, int64_t ttl_seconds) override {
    if (ttl_seconds <= 0) return Status::InvalidArgument("etcd keepalive: ttl must be > 0");
    return std::unique_ptr<LeaseKeeper>(new KeeperImpl(*this, id, ttl_seconds));
  }

  Result<std::unique_ptr<EtcdWatch>> Watch(const WatchOptions& o) override {
    const auto deadline = Clock::now() + timeout_;
    const size_t start = current_.load();
    Status last;
    for (size_t attempt = 0;; ++attempt) {
      const size_t i = (start + attempt) % eps_.size();
      Status s;
      std::unique_ptr<WatchImpl> w;
      if (Connect(*eps_[i], deadline).ok()) {
        w = std::make_unique<WatchImpl>(*eps_[i]);
        s = w->Start(o, deadline);
      } else {
        s = Status::TimedOut(eps_[i]->url + ": not connected");
      }
      if (s.ok()) {
        current_.store(i);
        return std::unique_ptr<EtcdWatch>(std::move(w));
      }
      if (!s.Is(Code::kTimedOut) && !s.Is(Code::kIOError)) return s;  // refused: no use elsewhere
      last = s;
      auto now = Clock::now();
      if (now >= deadline) break;
      if ((attempt + 1) % eps_.size() == 0)
        std::this_thread::sleep_for(std::min<Clock::duration>(milliseconds(50), deadline - now));
    }
    return Status::TimedOut("etcd watch: no endpoint answered within " +
                            std::to_string(timeout_.count()) + " ms (last: " + last.message() + ")");
  }

 private:
  std::vector<std::unique_ptr<Endpoint>> eps_;
  const milliseconds timeout_, attempt_;
  std::atomic<size_t> current_{0};
};

void KeeperImpl::Loop() {
  // Renew every ttl/3; keep trying after a failure (another endpoint, quorum
  // back) until the lease would have expired, then report it dead.
  auto expires = std::chrono::steady_clock::now() + std::chrono::seconds(ttl_);
  std::unique_lock lk(mu_);
  while (!stop_) {
    lk.unlock();
    auto r = client_.LeaseKeepAliveOnce(id_);
    lk.lock();
    auto now = std::chrono::steady_clock::now();
    milliseconds next;
    if (r.ok()) {
      expires = now + std::chrono::seconds(*r);
      next = milliseconds(*r * 1000 / 3);
    } else if (r.status().Is(Code::kNotFound) || now >= expires) {
      alive_.store(false);
      return;
    } else {
      next = milliseconds(200);
    }
    cv_.wait_for(lk, next, [&] { return stop_; });
  }
}

}  // namespace

std::vector<std::string> SplitEndpoints(const std::string& list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    if (comma > pos) out.push_back(list.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

// gRPC's own log lines (a failed TLS handshake says why only there) go to
// our log instead of raw stderr; its errors are warnings to us, since every
// failure also comes back as a Status.
static void GrpcLog(gpr_log_func_args* a) {
  if (a->severity == GPR_LOG_SEVERITY_ERROR) {
    spdlog::warn("etcd/grpc: {}", a->message);
  } else {
    spdlog::debug("etcd/grpc: {}", a->message);
  }
}

Result<std::unique_ptr<EtcdClient>> EtcdClient::Open(const EtcdOptions& o) {
  static std::once_flag log_once;
  std::call_once(log_once, [] { gpr_set_log_function(GrpcLog); });
  if (o.endpoints.empty()) return Status::InvalidArgument("etcd: no endpoint");
  if (o.timeout.count() <= 0) return Status::InvalidArgument("etcd: timeout must be > 0");
  std::shared_ptr<grpc::ChannelCredentials> tls;
  std::vector<std::unique_ptr<Endpoint>> eps;
  for (const auto& url : o.endpoints) {
    std::string target = url;
    bool https = false;
    if (target.rfind("https://", 0) == 0) {
      https = true;
      target = target.substr(8);
    } else if (target.rfind("http://", 0) == 0) {
      target = target.substr(7);
    } else if (target.find("://") != std::string::npos) {
      return Status::InvalidArgument("etcd: endpoint " + url + ": only http:// and https://");
    }
    while (!target.empty() && target.back() == '/') target.pop_back();
    if (target.empty()) return Status::InvalidArgument("etcd: empty endpoint in the list");
    if (https && !tls) {
      grpc::SslCredentialsOptions so;
      if (!o.ca_file.empty()) {
        HOOKFS_ASSIGN_OR_RETURN(so.pem_root_certs, ReadPem(o.ca_file));
      }
      if (o.cert_file.empty() != o.key_file.empty())
        return Status::InvalidArgument("etcd: --etcd-cert and --etcd-key go together");
      if (!o.cert_file.empty()) {
        HOOKFS_ASSIGN_OR_RETURN(so.pem_cert_chain, ReadPem(o.cert_file));
        HOOKFS_ASSIGN_OR_RETURN(so.pem_private_key, ReadPem(o.key_file));
      }
      tls = grpc::SslCredentials(so);
    }
    grpc::ChannelArguments args;
    // Reconnect to a member that comes back within a second, not gRPC's 120 s.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    // (MIN_RECONNECT_BACKOFF is also the connect timeout: keep it well above a handshake.)
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetMaxReceiveMessageSize(256 << 20);  // a full re-read of a big fleet's ledger
    auto ep = std::make_unique<Endpoint>();
    ep->url = url;
    ep->channel = grpc::CreateCustomChannel(
        target, https ? tls : grpc::InsecureChannelCredentials(), args);
    ep->kv = pb::KV::NewStub(ep->channel);
    ep->watch = pb::Watch::NewStub(ep->channel);
    ep->lease = pb::Lease::NewStub(ep->channel);
    eps.push_back(std::move(ep));
  }
  return std::unique_ptr<EtcdClient>(new ClientImpl(std::move(eps), o.timeout));
}

}  // namespace hookfs
