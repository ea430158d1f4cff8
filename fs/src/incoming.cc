#include "incoming.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "hookfs/namespace.h"
#include "hookfs/tree.h"

namespace hookfs::fs {

namespace {
constexpr std::string_view kResultSuffix = ".result";
}

// ---- SpoolCounts -----------------------------------------------------------

void SpoolCounts::Add(uid_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  ++n_[uid];
}

void SpoolCounts::Drop(uid_t uid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = n_.find(uid);
  if (it != n_.end() && --it->second == 0) n_.erase(it);
}

size_t SpoolCounts::Of(uid_t uid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = n_.find(uid);
  return it == n_.end() ? 0 : it->second;
}

// ---- Spool ----------------------------------------------------------------

Spool::Spool(std::string path, int fd, uint64_t serial, uid_t owner, gid_t group,
             std::shared_ptr<SpoolCounts> counts)
    : path_(std::move(path)), fd_(fd), serial_(serial), owner_(owner), group_(group),
      mtime_(std::time(nullptr)), counts_(std::move(counts)) {
  Touch();
  if (counts_) counts_->Add(owner_);
}

Result<std::shared_ptr<Spool>> Spool::Create(const std::string& staging_dir, uint64_t serial,
                                             uid_t owner, gid_t group,
                                             std::shared_ptr<SpoolCounts> counts) {
  std::string path = staging_dir + "/fs-spool-" + std::to_string(getpid()) + "-" +
                     std::to_string(serial) + ".pack";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "create spool " + path);
  // Held while the spool lives: a store opened by another process reclaims
  // only staging files whose lock it can take.
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return Status::FromErrno(err, "lock spool " + path);
  }
  return std::shared_ptr<Spool>(new Spool(std::move(path), fd, serial, owner, group, std::move(counts)));
}

Spool::~Spool() {
  ::unlink(path_.c_str());
  ::close(fd_);
  if (counts_) counts_->Drop(owner_);
}

Status Spool::Write(const void* data, size_t n, off_t off) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd_, p, n, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write spool");
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += w;
  }
  mtime_ = std::time(nullptr);
  Touch();
  return Status::OK();
}

Status Spool::Truncate(off_t size) {
  if (::ftruncate(fd_, size) != 0) return Status::FromErrno(errno, "truncate spool");
  mtime_ = std::time(nullptr);
  Touch();
  return Status::OK();
}

Result<size_t> Spool::Read(void* data, size_t n, off_t off) {
  ssize_t r;
  do {
    r = ::pread(fd_, data, n, off);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Status::FromErrno(errno, "read spool");
  return static_cast<size_t>(r);
}

uint64_t Spool::Size() const {
  struct stat st{};
  if (::fstat(fd_, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

// ---- Incoming -------------------------------------------------------------

Incoming::Incoming(Ledger* ledger, std::string staging_dir, std::string results_dir)
    : ledger_(ledger), staging_dir_(std::move(staging_dir)), results_dir_(std::move(results_dir)) {}

Status Incoming::Init() {
  for (const std::string& d : {staging_dir_, results_dir_}) {
    if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, "mkdir " + d);
    }
  }
  // Temporary result files of a previous run that died mid-write.
  if (DIR* dir = ::opendir(results_dir_.c_str())) {
    while (dirent* de = ::readdir(dir)) {
      if (std::strncmp(de->d_name, ".tmp-", 5) == 0) {
        ::unlinkat(::dirfd(dir), de->d_name, 0);
      }
    }
    ::closedir(dir);
  }
  KeepReserve();
  return Status::OK();
}

bool Incoming::IsResultName(const std::string& name) {
  return name.size() > kResultSuffix.size() &&
         name.compare(name.size() - kResultSuffix.size(), kResultSuffix.size(), kResultSuffix) == 0;
}

Status Incoming::ValidatePackName(const std::string& name) {
  HOOKFS_RETURN_IF_ERROR(ValidateEntryName(name));
  if (IsResultName(name)) {
    return Status::InvalidArgument("'" + name + "': names ending in .result are reserved for verdicts");
  }
  if (name.size() + kResultSuffix.size() > Limits::kMaxNameBytes) {
    return Status::InvalidArgument("'" + name + "': name too long for its .result");
  }
  return Status::OK();
}

std::shared_ptr<Spool> Incoming::Find(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = spools_.find(name);
  return it == spools_.end() ? nullptr : it->second;
}

std::string Incoming::NameOf(const std::shared_ptr<Spool>& spool) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, s] : spools_) {
    if (s == spool) return name;
  }
  return {};
}

Result<std::shared_ptr<Spool>> Incoming::Create(const std::string& name, bool excl, uid_t owner,
                                                gid_t group, bool admin) {
  HOOKFS_RETURN_IF_ERROR(ValidatePackName(name));
  ExpireIdle();
  if (!admin) {
    if (auto ro = ResultOwner(name); ro && *ro != owner) {
      return Status::PermissionDenied("incoming/" + name + ".result belongs to uid " + std::to_string(*ro));
    }
  }
  // Each spool holds a descriptor and staging space in the daemon until its
  // last handle goes: bounded per user (DESIGN.md §4).
  if (counts_->Of(owner) >= limits_.max_packs_per_user) {
    spdlog::warn("EDQUOT: uid {} may not create incoming/{}: {} open or staged packs (max_packs_per_user)",
                 owner, name, limits_.max_packs_per_user);
    return Status::Quota("uid " + std::to_string(owner) + " has " +
                         std::to_string(limits_.max_packs_per_user) + " open or staged packs");
  }
  std::shared_ptr<Spool> displaced;
  std::shared_ptr<Spool> spool;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = spools_.find(name);
    if (it != spools_.end() && excl) return Status::Exists("incoming/" + name + " exists");
    if (it != spools_.end() && !admin && it->second->owner() != owner) {
      return Status::PermissionDenied("incoming/" + name + " belongs to uid " +
                                      std::to_string(it->second->owner()));
    }
    auto created = Spool::Create(staging_dir_, next_serial_++, owner, group, counts_);
    if (!created.ok()) return created.status();
    spool = *created;
    if (it != spools_.end()) displaced = it->second;
    spools_[name] = spool;
  }
  if (displaced) Displace(displaced, name);
  return spool;
}

// A spool whose name another create or rename took: never applied; its
// writer learns it from its next write or its close.
void Incoming::Displace(const std::shared_ptr<Spool>& spool, const std::string& name) {
  std::lock_guard<std::mutex> lock(spool->mu);
  if (spool->consumed) return;
  spool->consumed = true;
  spool->displaced = true;
  spdlog::warn("incoming/{}: replaced while still being written; the earlier writer gets EIO", name);
}

void Incoming::ExpireIdle() {
  auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, std::shared_ptr<Spool>>> idle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, spool] : spools_) {
      if (now - spool->last_active() >= limits_.idle_timeout) idle.emplace_back(name, spool);
    }
  }
  for (const auto& [name, spool] : idle) {
    // Busy (an apply or a write in progress): not idle. Never wait here.
    std::unique_lock<std::mutex> lock(spool->mu, std::try_to_lock);
    if (!lock.owns_lock() || spool->consumed) continue;
    if (std::chrono::steady_clock::now() - spool->last_active() < limits_.idle_timeout) continue;
    (void)Expire(spool, name);
  }
}

// Called with spool->mu held.
Status Incoming::Expire(const std::shared_ptr<Spool>& spool, const std::string& name) {
  ApplyReport report;
  report.pack = name;
  report.status = Status::Malformed("nothing written to it for " +
                                    std::to_string(limits_.idle_timeout.count()) +
                                    " s: rejected, nothing applied");
  spool->consumed = true;
  spool->expired = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = spools_.find(name);
    if (it != spools_.end() && it->second == spool) spools_.erase(it);
  }
  (void)spool->Truncate(0);  // its space comes back now; the fd goes with its last handle
  ::unlink(spool->path().c_str());
  spdlog::warn("incoming/{}: uid {}: {}", name, spool->owner(), report.status.ToString());
  Status ws = WriteResult(name, report.ToJson().dump(2) + "\n", spool->owner());
  if (!ws.ok()) spdlog::error("incoming/{}: writing {}.result: {}", name, name, ws.ToString());
  return report.status;
}

std::optional<uid_t> Incoming::ResultOwner(const std::string& pack_name) const {
  auto rs = StatResult(pack_name + std::string(kResultSuffix));
  if (!rs.ok()) return std::nullopt;
  return rs->uid;
}

Status Incoming::Remove(const std::string& name) {
  std::shared_ptr<Spool> spool;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = spools_.find(name);
    if (it == spools_.end()) return Status::NotFound("incoming/" + name);
    spool = it->second;
    spools_.erase(it);
  }
  std::lock_guard<std::mutex> lock(spool->mu);
  spool->consumed = true;
  return Status::OK();
}

Status Incoming::Rename(const std::string& from, const std::string& to, bool noreplace, uid_t caller,
                        bool admin) {
  HOOKFS_RETURN_IF_ERROR(ValidatePackName(to));
  if (!admin) {
    if (auto ro = ResultOwner(to); ro && *ro != caller) {
      return Status::PermissionDenied("incoming/" + to + ".result belongs to uid " + std::to_string(*ro));
    }
  }
  std::shared_ptr<Spool> spool;
  std::shared_ptr<Spool> displaced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = spools_.find(from);
    if (it == spools_.end()) return Status::NotFound("incoming/" + from);
    auto dst = spools_.find(to);
    // A pack belongs to its creator: another publisher may neither move it
    // nor replace it (DESIGN.md §4).
    if (!admin && it->second->owner() != caller) {
      return Status::PermissionDenied("incoming/" + from + " belongs to uid " +
                                      std::to_string(it->second->owner()));
    }
    if (!admin && dst != spools_.end() && dst->second->owner() != caller) {
      return Status::PermissionDenied("incoming/" + to + " belongs to uid " +
                                      std::to_string(dst->second->owner()));
    }
    if (from == to) return Status::OK();
    if (noreplace && dst != spools_.end()) return Status::Exists("incoming/" + to + " exists");
    spool = it->second;
    if (dst != spools_.end()) {
      displaced = dst->second;
      spools_.erase(dst);
    }
    if (IsStaging(to)) {
      spools_.erase(it);
      spools_[to] = spool;
    }
  }
  if (displaced) Displace(displaced, to);
  if (IsStaging(to)) return Status::OK();
  std::lock_guard<std::mutex> lock(spool->mu);
  if (spool->consumed) return Status::NotFound("incoming/" + from);
  spool->dirty = false;
  return Publish(spool, to, ActorForUid(spool->owner()));  // published as its creator
}

Status Incoming::FlushPublish(const std::shared_ptr<Spool>& spool, const std::string& name,
                              const Actor& who) {
  std::lock_guard<std::mutex> lock(spool->mu);
  if (spool->displaced) {
    return Status::IOError("another create or rename took this pack's name before it was published; "
                           "nothing was applied");
  }
  if (spool->consumed || !spool->dirty) return Status::OK();
  spool->dirty = false;
  if (name.empty() || IsStaging(name)) return Status::OK();
  return Publish(spool, name, who);
}

bool Incoming::FlushWouldApply(const std::shared_ptr<Spool>& spool) {
  {
    std::lock_guard<std::mutex> lock(spool->mu);
    if (spool->consumed || !spool->dirty) return false;
  }
  std::string name = NameOf(spool);
  return !name.empty() && !IsStaging(name);
}

bool Incoming::RejectUnwritten(const std::shared_ptr<Spool>& spool, const std::string& name,
                               const Actor& who) {
  std::lock_guard<std::mutex> lock(spool->mu);
  if (spool->consumed || spool->dirty || spool->Size() != 0) return false;
  spdlog::warn("incoming/{}: closed without a byte written by uid {}: rejected", name, who.uid);
  (void)Publish(spool, name, who);  // an empty file is no pack: Malformed, result written
  return true;
}

// Called with spool->mu held.
Status Incoming::Publish(const std::shared_ptr<Spool>& spool, const std::string& name,
                         const Actor& who) {
  ApplyOptions opts;
  opts.actor = who;
  opts.pack_name = name;
  // Sealed (docs/integrity.md, "Sealed packs"): the spool is ours (0600, in
  // the store), and every write or truncate of it takes spool->mu, held here.
  opts.sealed = true;
  opts.require_signed = require_signed_;
  auto t0 = std::chrono::steady_clock::now();
  ApplyReport report = ApplyPackFile(ledger_, spool->path(), opts);
  Status verdict = report.Verdict();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::string json;
  try {
    json = report.ToJson().dump(2) + "\n";
  } catch (const std::exception& e) {
    json = std::string("{\"error\": \"cannot render report\"}\n");
    spdlog::error("incoming/{}: rendering the report: {}", name, e.what());
  }
  // The spool's bytes go first: on a full disk they are what makes room for
  // the result (the descriptor lives on until the last handle goes).
  (void)spool->Truncate(0);
  ::unlink(spool->path().c_str());
  Status ws = WriteResult(name, json, who.uid);
  if (!ws.ok()) spdlog::error("incoming/{}: writing {}.result: {}", name, name, ws.ToString());

  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = spools_.begin(); it != spools_.end(); ++it) {
      if (it->second == spool) {
        spools_.erase(it);
        break;
      }
    }
  }
  spool->consumed = true;

  for (const ReleaseOutcome& r : report.releases) {
    switch (r.kind) {
      case ReleaseOutcome::Kind::kAccepted:
        spdlog::info("incoming/{}: uid {}: {} release {} accepted (digest {})", name, who.uid, r.hook,
                     r.version, r.digest.Hex());
        break;
      case ReleaseOutcome::Kind::kDuplicate:
        spdlog::info("incoming/{}: uid {}: {} duplicate of release {}", name, who.uid, r.hook, r.version);
        break;
      case ReleaseOutcome::Kind::kRejected:
        spdlog::warn("incoming/{}: uid {}: {} release rejected: {}", name, who.uid, r.hook, r.reason);
        break;
    }
  }
  if (verdict.ok()) {
    spdlog::info("incoming/{}: published by uid {} in {:.2f}s", name, who.uid, secs);
  } else {
    spdlog::warn("incoming/{}: uid {}: {} (see incoming/{}.result)", name, who.uid,
                 verdict.ToString(), name);
  }
  return verdict;
}

// A few blocks kept aside in results/ so that a verdict can be written on a
// full disk (DESIGN.md §4: a full disk gives ENOSPC with a .result).
constexpr size_t kResultReserve = 256 * 1024;

void Incoming::KeepReserve() {
  std::string path = results_dir_ + "/.reserve";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  struct stat st{};
  if (::fstat(fd, &st) == 0 && static_cast<size_t>(st.st_blocks) * 512 < kResultReserve) {
    int rc = ::posix_fallocate(fd, 0, kResultReserve);
    if (rc != 0) {
      (void)::ftruncate(fd, 0);  // no room: try again after the next verdict
      spdlog::debug("{}: {}", path, std::strerror(rc));
    }
  }
  ::close(fd);
}

Status Incoming::WriteResult(const std::string& name, const std::string& json, uid_t owner) {
  Status s = WriteResultOnce(name, json, owner);
  if (s.Is(Code::kNoSpace)) {
    // Full: give back the reserve and try once more.
    ::unlink((results_dir_ + "/.reserve").c_str());
    s = WriteResultOnce(name, json, owner);
  }
  KeepReserve();
  return s;
}

Status Incoming::WriteResultOnce(const std::string& name, const std::string& json, uid_t owner) {
  std::string tmp = results_dir_ + "/.tmp-" + std::to_string(next_serial_++);
  std::string final_path = results_dir_ + "/" + name + std::string(kResultSuffix);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  size_t done = 0;
  while (done < json.size()) {
    ssize_t w = ::write(fd, json.data() + done, json.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Status::FromErrno(err, "write " + tmp);
    }
    done += static_cast<size_t>(w);
  }
  if (::geteuid() == 0) {
    if (::fchown(fd, owner, static_cast<gid_t>(-1)) != 0) {
      spdlog::debug("chown {}: {}", tmp, std::strerror(errno));
    }
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::FromErrno(err, "fsync " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno(err, "rename " + final_path);
  }
  return Status::OK();
}

Result<ResultStat> Incoming::StatResult(const std::string& name) const {
  // Dot-named results (of staged packs that expired) are shown too; the
  // daemon's own files in results/ (.tmp-N, .reserve) never end in .result.
  if (!IsResultName(name) || name.find('/') != std::string::npos) {
    return Status::NotFound("incoming/" + name);
  }
  struct stat st{};
  std::string path = results_dir_ + "/" + name;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::NotFound("incoming/" + name);
  }
  ResultStat rs;
  rs.size = static_cast<uint64_t>(st.st_size);
  rs.mtime = st.st_mtime;
  rs.ino = st.st_ino;
  rs.uid = st.st_uid;
  return rs;
}

Result<int> Incoming::OpenResult(const std::string& name) const {
  if (!IsResultName(name) || name.find('/') != std::string::npos) return Status::NotFound("incoming/" + name);
  std::string path = results_dir_ + "/" + name;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  return fd;
}

Status Incoming::RemoveResult(const std::string& name) {
  if (!IsResultName(name) || name.find('/') != std::string::npos) return Status::NotFound("incoming/" + name);
  std::string path = results_dir_ + "/" + name;
  if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, "rm " + path);
  return Status::OK();
}

std::vector<IncomingEntry> Incoming::List() {
  ExpireIdle();
  std::vector<IncomingEntry> out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, spool] : spools_) out.push_back(IncomingEntry{name, false, spool});
  }
  if (DIR* dir = ::opendir(results_dir_.c_str())) {
    while (dirent* de = ::readdir(dir)) {
      std::string n = de->d_name;
      if (!IsResultName(n)) continue;
      out.push_back(IncomingEntry{std::move(n), true, nullptr});
    }
    ::closedir(dir);
  }
  return out;
}

size_t Incoming::active_spools() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spools_.size();
}

}  // namespace hookfs::fs
