#include "fleet_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "hookfs/etcd.h"
#include "hookfs/s3.h"

namespace hookfs::fleet_test {
namespace fs = std::filesystem;
using Ms = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

namespace {

double MsSince(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

std::string Tail(const std::string& path, size_t bytes = 2000) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > bytes ? s.substr(s.size() - bytes) : s;
}

bool Exited(pid_t pid) {
  int st;
  return ::waitpid(pid, &st, WNOHANG) == pid;
}

std::string ReadUuid() {
  std::ifstream in("/proc/sys/kernel/random/uuid");
  std::string u;
  in >> u;
  return u;
}

}  // namespace

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    // Dies with the test binary even if it crashes before its teardown.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    int null = ::open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    if (null >= 0) ::dup2(null, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

bool StopPid(pid_t pid, int wait_ms, int sig) {
  if (pid <= 0) return true;
  ::kill(pid, sig);
  auto t0 = SteadyClock::now();
  while (MsSince(t0) < wait_ms) {
    if (Exited(pid)) return true;
    std::this_thread::sleep_for(Ms(10));
  }
  ::kill(pid, SIGKILL);
  int st;
  ::waitpid(pid, &st, 0);
  return false;
}

int Sh(const std::string& cmd, std::string* out) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::string o;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) o.append(buf, n);
  int st = ::pclose(p);
  if (out) *out = std::move(o);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int FreePortBase(int n) {
  std::random_device rd;
  std::mt19937 rng(rd() ^ static_cast<unsigned>(::getpid()));
  // Above etcd's 2379/2380 and Ceph's 3300/6789/7480, below the ephemeral range.
  std::uniform_int_distribution<int> dist(20000, 32000 - n);
  for (int attempt = 0; attempt < 200; ++attempt) {
    int base = dist(rng);
    bool ok = true;
    for (int i = 0; i < n && ok; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(base + i));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
      ::close(fd);
    }
    if (ok) return base;
  }
  return -1;
}

std::string MakeTempDir(const std::string& tag) {
  std::string t = (fs::temp_directory_path() / ("hookfs-" + tag + "-XXXXXX")).string();
  if (!::mkdtemp(t.data())) return {};
  return t;
}

// ---------------------------------------------------------------- etcd

EtcdCluster::EtcdCluster(int members, const EtcdTlsFiles* tls) : n_(members), pids_(members, -1) {
  if (tls) {
    tls_ = true;
    files_ = *tls;
  }
  dir_ = MakeTempDir("etcd");
  base_ = FreePortBase(2 * n_);
}

EtcdCluster::~EtcdCluster() {
  for (int i = 0; i < n_; ++i) Kill(i);
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::string EtcdCluster::Endpoint(int i) const {
  return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(base_ + i);
}

std::vector<std::string> EtcdCluster::Endpoints() const {
  std::vector<std::string> v;
  for (int i = 0; i < n_; ++i) v.push_back(Endpoint(i));
  return v;
}

void EtcdCluster::Launch(int i) {
  std::string cluster;
  for (int j = 0; j < n_; ++j) {
    if (j) cluster += ",";
    cluster += "m" + std::to_string(j) + "=http://127.0.0.1:" + std::to_string(base_ + n_ + j);
  }
  std::string peer = "http://127.0.0.1:" + std::to_string(base_ + n_ + i);
  std::vector<std::string> argv = {
      "etcd", "--name", "m" + std::to_string(i), "--data-dir", dir_ + "/m" + std::to_string(i),
      "--listen-client-urls", Endpoint(i), "--advertise-client-urls", Endpoint(i),
      "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
      "--initial-cluster", cluster, "--initial-cluster-state", "new",
      "--initial-cluster-token", "hookfs-test-" + std::to_string(base_),
      // Fast elections on loopback (NOTES.md); metrics and the v2 API off.
      "--heartbeat-interval", "50", "--election-timeout", "500", "--enable-v2=false"};
  if (tls_) {
    // https for clients with client-certificate auth; peers stay on http.
    for (const std::string& x : {std::string("--cert-file"), files_.server_cert,
                                 std::string("--key-file"), files_.server_key,
                                 std::string("--trusted-ca-file"), files_.ca,
                                 std::string("--client-cert-auth")})
      argv.push_back(x);
  }
  pids_[i] = Spawn(argv, dir_ + "/m" + std::to_string(i) + ".log");
}

std::string EtcdCluster::WaitReady(int i, int ms) {
  EtcdOptions o;
  o.endpoints = {Endpoint(i)};
  o.timeout = Ms(500);
  if (tls_) {
    o.ca_file = files_.ca;
    o.cert_file = files_.client_cert;
    o.key_file = files_.client_key;
  }
  auto c = EtcdClient::Open(o);
  if (!c.ok()) return c.status().ToString();
  auto t0 = SteadyClock::now();
  std::string last;
  while (MsSince(t0) < ms) {
    if (Exited(pids_[i])) {
      pids_[i] = -1;
      return "etcd m" + std::to_string(i) + " exited:\n" + Tail(dir_ + "/m" + std::to_string(i) + ".log");
    }
    auto r = (*c)->Get("/hookfs-test/ready");  // linearizable: needs the member in a quorum
    if (r.ok()) return "";
    last = r.status().ToString();
    std::this_thread::sleep_for(Ms(50));
  }
  return "etcd m" + std::to_string(i) + " not ready after " + std::to_string(ms) + " ms: " + last +
         "\n" + Tail(dir_ + "/m" + std::to_string(i) + ".log");
}

std::string EtcdCluster::Start() {
  if (dir_.empty() || base_ < 0) return "no temp dir or no free ports";
  auto t0 = SteadyClock::now();
  for (int i = 0; i < n_; ++i) Launch(i);
  for (int i = 0; i < n_; ++i) {
    std::string e = WaitReady(i, 20000);
    if (!e.empty()) return e;
  }
  start_ms_ = MsSince(t0);
  return "";
}

void EtcdCluster::Stop(int i) {
  if (pids_[i] > 0) StopPid(pids_[i], 5000);
  pids_[i] = -1;
}

void EtcdCluster::Kill(int i) {
  if (pids_[i] > 0) StopPid(pids_[i], 2000, SIGKILL);
  pids_[i] = -1;
}

int EtcdCluster::Leader() const {
  for (int i = 0; i < n_; ++i) {
    if (pids_[i] <= 0) continue;
    std::string out;
    std::string tls = tls_ ? " --cacert " + files_.ca + " --cert " + files_.client_cert + " --key " +
                                 files_.client_key
                           : "";
    if (Sh("ETCDCTL_API=3 timeout 5 etcdctl --command-timeout=2s --endpoints " + Endpoint(i) + tls +
               " endpoint status -w json 2>/dev/null",
           &out) != 0)
      continue;
    auto j = nlohmann::json::parse(out, nullptr, false);
    if (j.is_discarded() || !j.is_array() || j.empty()) continue;
    const auto& st = j[0]["Status"];
    if (st["header"]["member_id"] == st["leader"]) return i;
  }
  return -1;
}

std::string EtcdCluster::Restart(int i) {
  if (pids_[i] > 0) return "m" + std::to_string(i) + " is running";
  Launch(i);
  return WaitReady(i, 20000);
}

// ---------------------------------------------------------------- Ceph

CephCluster::CephCluster() {
  dir_ = MakeTempDir("ceph");
  int base = FreePortBase(2);
  mon_port_ = base;
  rgw_port_ = base + 1;
}

CephCluster::~CephCluster() {
  StopAll();
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::string CephCluster::url() const { return "http://127.0.0.1:" + std::to_string(rgw_port_); }
std::string CephCluster::bucket_url() const { return url() + "/hookfs-test"; }

void CephCluster::StopAll() {
  // memstore: nothing to flush, so no need to wait long for a clean exit.
  for (pid_t* p : {&rgw_, &osd_, &mon_}) {
    if (*p > 0) StopPid(*p, 2000);
    *p = -1;
  }
}

std::string CephCluster::Start() {
  if (dir_.empty() || mon_port_ < 0) return "no temp dir or no free ports";
  auto t0 = SteadyClock::now();
  const std::string fsid = ReadUuid(), d = dir_;
  for (const char* sub : {"/run", "/log", "/mon", "/osd", "/rgw"}) fs::create_directories(d + sub);
  conf_ = d + "/ceph.conf";
  {
    std::ofstream c(conf_);
    c << "[global]\n"
      << "fsid = " << fsid << "\n"
      << "mon host = v2:127.0.0.1:" << mon_port_ << "\n"
      << "mon initial members = a\n"
      // No cephx: loopback test cluster. radosgw hangs 300 s without crc (NOTES.md).
      << "auth cluster required = none\nauth service required = none\nauth client required = none\n"
      << "ms mon client mode = crc\n"
      << "osd objectstore = memstore\nmemstore device bytes = 2147483648\n"
      << "osd pool default size = 1\nosd pool default min size = 1\n"
      << "osd pool default pg autoscale mode = off\nosd crush chooseleaf type = 0\n"
      << "mon allow pool size one = true\nmon warn on pool no redundancy = false\n"
      << "run dir = " << d << "/run\n"
      << "admin socket = " << d << "/run/$name.asok\n"
      << "log file = " << d << "/log/$name.log\n"
      << "pid file = " << d << "/run/$name.pid\n"
      << "keyring = " << d << "/$name.keyring\n"
      << "[mon.a]\nmon data = " << d << "/mon\n"
      << "[osd.0]\nosd data = " << d << "/osd\n"
      << "[client.rgw]\nrgw frontends = beast endpoint=127.0.0.1:" << rgw_port_ << "\n"
      << "rgw data = " << d << "/rgw\n";
  }
  const std::string c = " -c " + conf_ + " ";
  std::string out;
  if (Sh("monmaptool --create --fsid " + fsid + " --addv a '[v2:127.0.0.1:" + std::to_string(mon_port_) +
         "]' " + d + "/monmap >/dev/null 2>&1") != 0)
    return "monmaptool failed";
  if (Sh("ceph-mon" + c + "--mkfs -i a --monmap " + d + "/monmap >" + d + "/log/mkfs.log 2>&1") != 0)
    return "ceph-mon --mkfs failed:\n" + Tail(d + "/log/mkfs.log");
  mon_ = Spawn({"ceph-mon", "-f", "-c", conf_, "-i", "a"}, d + "/log/mon.out");
  const std::string osd_uuid = ReadUuid();
  // The ceph CLI waits for the mon by itself; bounded by timeout(1).
  if (Sh("timeout 30 ceph" + c + "osd new " + osd_uuid + " 2>&1", &out) != 0)
    return "ceph osd new failed: " + out + "\n" + Tail(d + "/log/mon.a.log");
  if (Sh("ceph-osd" + c + "-i 0 --mkfs --osd-uuid " + osd_uuid + " >" + d + "/log/osd-mkfs.log 2>&1") != 0)
    return "ceph-osd --mkfs failed:\n" + Tail(d + "/log/osd-mkfs.log");
  osd_ = Spawn({"ceph-osd", "-f", "-c", conf_, "-i", "0"}, d + "/log/osd.out");
  rgw_ = Spawn({"radosgw", "-f", "-c", conf_, "-n", "client.rgw"}, d + "/log/rgw.out");
  // radosgw answers HTTP once its pools exist (needs the OSD up): ≤ 90 s.
  bool up = false;
  while (MsSince(t0) < 90000) {
    for (pid_t p : {mon_, osd_, rgw_})
      if (Exited(p)) {
        if (p == mon_) mon_ = -1;
        if (p == osd_) osd_ = -1;
        if (p == rgw_) rgw_ = -1;
        return "a Ceph daemon exited:\n" + Tail(d + "/log/client.rgw.log") + Tail(d + "/log/osd.0.log");
      }
    if (Sh("curl -s -m 2 -o /dev/null -w '%{http_code}' " + url() + "/", &out) == 0 && out == "200") {
      up = true;
      break;
    }
    std::this_thread::sleep_for(Ms(200));
  }
  if (!up) return "radosgw did not answer within 90 s:\n" + Tail(d + "/log/client.rgw.log");
  if (Sh("timeout 30 radosgw-admin" + c + "-n client.rgw user create --uid=hookfs-test "
         "--display-name=hookfs-test 2>/dev/null", &out) != 0)
    return "radosgw-admin user create failed";
  auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || !j.contains("keys") || j["keys"].empty()) return "radosgw-admin: no keys";
  access_ = j["keys"][0]["access_key"].get<std::string>();
  secret_ = j["keys"][0]["secret_key"].get<std::string>();
  S3Options o;
  o.url = bucket_url();
  o.credentials = {access_, secret_};
  auto s3 = S3Client::Open(o);
  if (!s3.ok()) return s3.status().ToString();
  Status st = (*s3)->CreateBucket();
  if (!st.ok()) return "create bucket: " + st.ToString();
  start_ms_ = MsSince(t0);
  return "";
}

}  // namespace hookfs::fleet_test
