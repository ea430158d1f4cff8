// Real servers for the fleet tests: an etcd cluster and a one-OSD Ceph with
// radosgw, on loopback, in a temp dir, started and stopped by PID.
//
// - Ports are picked at run time from a random base that binds free, never
//   2379/2380: a system etcd (Debian's postinst starts one) is neither used
//   nor disturbed, and two test binaries in parallel do not clash.
// - Every wait is bounded; a daemon that does not stop on SIGTERM within its
//   bound is SIGKILLed. The destructors kill whatever is still running and
//   remove the temp dir, so a failed test leaves no process behind.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace hookfs::fleet_test {

// fork+exec argv with stdout/stderr appended to log; returns the pid.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log);
// SIGTERM (or sig), wait up to wait_ms, then SIGKILL and reap. True if it
// exited within the bound.
bool StopPid(pid_t pid, int wait_ms, int sig = 15);
// /bin/sh -c cmd; returns exit status, stdout in *out.
int Sh(const std::string& cmd, std::string* out = nullptr);
// A base port p such that p..p+n-1 all bind free on 127.0.0.1.
int FreePortBase(int n);
std::string MakeTempDir(const std::string& tag);

struct EtcdTlsFiles {
  std::string ca, server_cert, server_key;  // the members require client certs signed by ca
  std::string client_cert, client_key;      // what the harness itself connects with
};

class EtcdCluster {
 public:
  // members members on fresh ports, data under a temp dir; tls: https client
  // URLs with client-certificate auth.
  explicit EtcdCluster(int members = 3, const EtcdTlsFiles* tls = nullptr);
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // Starts every member and waits (≤ 20 s) until each answers; "" or why not.
  std::string Start();
  // SIGTERM member i, bounded wait; Kill: SIGKILL.
  void Stop(int i);
  void Kill(int i);
  // Starts member i again on its data dir; waits until it answers (≤ 20 s).
  std::string Restart(int i);
  bool running(int i) const { return pids_[i] > 0; }
  // The index of the current leader (etcdctl endpoint status), -1 if none.
  int Leader() const;

  std::string Endpoint(int i) const;
  std::vector<std::string> Endpoints() const;
  const std::string& dir() const { return dir_; }
  // Milliseconds the last Start() took until every member answered.
  double start_ms() const { return start_ms_; }

 private:
  void Launch(int i);
  std::string WaitReady(int i, int ms);

  int n_;
  bool tls_ = false;
  EtcdTlsFiles files_;
  std::string dir_;
  int base_ = 0;
  std::vector<pid_t> pids_;
  double start_ms_ = 0;
};

// One ceph-mon, one memstore ceph-osd, one radosgw; a user and a bucket.
class CephCluster {
 public:
  CephCluster();
  ~CephCluster();
  CephCluster(const CephCluster&) = delete;
  CephCluster& operator=(const CephCluster&) = delete;

  // Starts everything and creates user and bucket; "" or why not (with the
  // tail of the failing daemon's log).
  std::string Start();
  void StopAll();

  std::string url() const;          // http://127.0.0.1:PORT
  std::string bucket_url() const;   // url()/BUCKET
  const std::string& access_key() const { return access_; }
  const std::string& secret_key() const { return secret_; }
  double start_ms() const { return start_ms_; }
  // The radosgw's pid (tests stop it to make the bucket unreachable).
  pid_t rgw_pid() const { return rgw_; }
  const std::string& conf() const { return conf_; }

 private:
  std::string dir_, conf_;
  int mon_port_ = 0, rgw_port_ = 0;
  pid_t mon_ = -1, osd_ = -1, rgw_ = -1;
  std::string access_, secret_;
  double start_ms_ = 0;
};

}  // namespace hookfs::fleet_test
