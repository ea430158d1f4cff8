// hookfs: mount a hookfs store (DESIGN.md §2–§4, docs/mount.md).
//
//   hookfs [--config FILE] [--store DIR] [-f] [-o allow_other,publish_group=G,run_group=G,...]
//          [--log-level L] [--threads N] [--unmount-stale] [MOUNTPOINT]
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "hookfs/ledger.h"
#include "hookfs/store.h"
#include "hookfs_fs.h"
#include "incoming.h"
#include "lifecycle.h"
#include "retainer.h"
#include "policy.h"

namespace {

struct FuseArgs {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ~FuseArgs() { fuse_opt_free_args(&args); }
  void Add(const std::string& a) { fuse_opt_add_arg(&args, a.c_str()); }
};

struct SessionOwner {
  fuse_session* se = nullptr;
  bool mounted = false;
  bool handlers = false;
  ~SessionOwner() {
    if (!se) return;
    if (handlers) fuse_remove_signal_handlers(se);
    if (mounted) fuse_session_unmount(se);
    fuse_session_destroy(se);
  }
};

struct LoopConfig {
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  ~LoopConfig() { fuse_loop_cfg_destroy(cfg); }
};

struct Opened {
  std::unique_ptr<hookfs::Store> store;
  std::unique_ptr<hookfs::Ledger> ledger;
  std::unique_ptr<hookfs::fs::Incoming> incoming;
};

hookfs::Result<Opened> OpenStore(const std::string& dir) {
  hookfs::StoreOptions so;
  so.dir = dir;
  Opened o;
  HOOKFS_ASSIGN_OR_RETURN(o.store, hookfs::Store::Open(so));
  o.ledger = std::make_unique<hookfs::Ledger>(o.store.get());
  o.incoming = std::make_unique<hookfs::fs::Incoming>(o.ledger.get(), o.store->staging_dir(),
                                                      o.store->dir() + "/results");
  HOOKFS_RETURN_IF_ERROR(o.incoming->Init());
  return o;
}

// Every spool, open file and /proc read takes a descriptor: the soft limit
// (often 1024) is raised to the hard one (systemd: LimitNOFILE=) at start.
void RaiseNofileLimit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      spdlog::warn("raising RLIMIT_NOFILE from {} to {}: {}", was, rl.rlim_max, std::strerror(errno));
      return;
    }
  }
  spdlog::debug("RLIMIT_NOFILE {}", rl.rlim_cur);
}

std::string StatusLine(const hookfs::Ledger* ledger, const std::string& store, const std::string& mnt) {
  auto hooks = ledger->ListHooks();
  std::string n = hooks.ok() ? std::to_string(hooks->size()) : "?";
  return "serving " + store + " on " + mnt + ": " + n + " hooks";
}

int Run(int argc, char** argv) {
  CLI::App app{"hookfs: mount a hookfs store (hookfs(8), docs/service.md)"};
  std::string config_path, store_dir, mountpoint, log_level = "info";
  bool foreground = false, debug = false, unmount_stale = false;
  std::vector<std::string> opts;
  unsigned threads = 8;
  std::string host_id;
  app.add_option("--config", config_path,
                 "configuration file: key = value lines (store, mountpoint, publish_group, run_group, "
                 "admin_group, log_level, allow_other, threads, keep, require_signed, host); command-line options override it. No default: the "
                 "systemd unit passes /etc/hookfs/hookfs.conf");
  app.add_option("--store", store_dir, "store directory (default: $HOOKFS_STORE, /var/lib/hookfs as root, else ~/.local/share/hookfs)");
  app.add_flag("-f,--foreground", foreground, "stay in the foreground (systemd uses this)");
  app.add_flag("-d,--debug", debug, "libfuse debug output (implies -f)");
  app.add_option("-o", opts, "mount options: allow_other,publish_group=G,run_group=G,admin_group=G,keep=N,require_signed,... "
                 "(others go to libfuse)")->take_all()->allow_extra_args(false);
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off (default info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--threads", threads, "FUSE worker threads (default 8)")->check(CLI::Range(1u, 64u));
  app.add_option("--host", host_id, "this host's id in run.json (default: the hostname)");
  app.add_flag("--unmount-stale", unmount_stale,
               "clear a stale mount a dead daemon left on the mountpoint (fusermount3 -uz), then exit");
  app.add_option("MOUNTPOINT", mountpoint, "where to mount (default: mountpoint = in --config)");
  app.footer("Logs go to stderr; with sd-daemon priority prefixes (<3> error ... <7> debug) when stderr is "
             "the journal (JOURNAL_STREAM). Sends READY=1, STATUS= and STOPPING=1 to $NOTIFY_SOCKET.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (debug) foreground = true;

  hookfs::fs::SetupLogging(hookfs::fs::StderrIsJournal());
  RaiseNofileLimit();
  spdlog::set_level(spdlog::level::info);

  // The configuration file first, then the command line over it.
  hookfs::fs::ServiceConfig cfg;
  if (!config_path.empty()) {
    auto c = hookfs::fs::ReadConfigFile(config_path);
    if (!c.ok()) {
      spdlog::error("{}", c.status().message());
      return 2;
    }
    cfg = std::move(c).value();
  }
  if (app.count("--store") == 0 && cfg.store) store_dir = *cfg.store;
  bool mountpoint_from_config = false;
  if (mountpoint.empty() && cfg.mountpoint) {
    mountpoint = *cfg.mountpoint;
    mountpoint_from_config = true;
  }
  if (app.count("--log-level") == 0 && cfg.log_level) log_level = *cfg.log_level;
  if (app.count("--threads") == 0 && cfg.threads) threads = *cfg.threads;
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (mountpoint.empty()) {
    spdlog::error("no mountpoint: give MOUNTPOINT, or mountpoint = in a --config file");
    return 2;
  }

  if (unmount_stale) {
    hookfs::Status st = hookfs::fs::RecoverStaleMount(mountpoint);
    if (!st.ok()) spdlog::error("{}", st.ToString());
    return st.ok() ? 0 : 1;
  }

  auto mo = hookfs::fs::ParseMountOptions(opts);
  if (!mo.ok()) {
    spdlog::error("{}", mo.status().message());
    return 2;
  }
  if (cfg.allow_other.value_or(false)) mo->allow_other = true;
  if (!mo->publish_group) mo->publish_group = cfg.publish_group;
  if (!mo->run_group) mo->run_group = cfg.run_group;
  if (!mo->admin_group) mo->admin_group = cfg.admin_group;
  if (!mo->keep) mo->keep = cfg.keep;
  if (cfg.require_signed.value_or(false)) mo->require_signed = true;
  if (app.count("--host") == 0 && cfg.host) host_id = *cfg.host;
  if (host_id.empty()) host_id = hookfs::HostName();
  hookfs::fs::Policy policy;
  policy.owner_uid = ::getuid();
  policy.owner_gid = ::getgid();
  for (auto [name, out] : {std::pair{mo->publish_group, &policy.publish_gid},
                           std::pair{mo->run_group, &policy.run_gid},
                           std::pair{mo->admin_group, &policy.admin_gid}}) {
    if (!name) continue;
    auto g = hookfs::fs::ResolveGroup(*name);
    if (!g.ok()) {
      spdlog::error("{}", g.status().message());
      return 2;
    }
    *out = *g;
  }

  if (store_dir.empty()) store_dir = hookfs::Store::DefaultDir();
  std::error_code ec;
  store_dir = std::filesystem::absolute(store_dir, ec).string();

  // A service's mountpoint (from the configuration) is made when missing:
  // tmpfiles.d makes only the default one, not those of hookfs@NAME.
  if (mountpoint_from_config && ::access(mountpoint.c_str(), F_OK) != 0 && errno == ENOENT) {
    if (::mkdir(mountpoint.c_str(), 0755) == 0) {
      spdlog::info("created mountpoint {}", mountpoint);
    } else {
      spdlog::error("mkdir {}: {}", mountpoint, std::strerror(errno));
      return 1;
    }
  }

  hookfs::Status st = hookfs::fs::RecoverStaleMount(mountpoint);
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
    return 1;
  }
  char real[PATH_MAX];
  if (!::realpath(mountpoint.c_str(), real)) {
    spdlog::error("mountpoint {}: {}", mountpoint, std::strerror(errno));
    return 1;
  }
  mountpoint = real;

  // In the foreground (systemd, tests) open the store first so that a bad
  // store fails before anything is mounted. fuse_daemonize forks: a
  // background daemon opens LMDB after it (never use an env across fork).
  Opened opened;
  if (foreground) {
    auto o = OpenStore(store_dir);
    if (!o.ok()) {
      spdlog::error("store {}: {}", store_dir, o.status().ToString());
      return 1;
    }
    opened = std::move(o).value();
  }

  // After every publish: STATUS= with the new hook count (only under systemd).
  const bool notify = std::getenv("NOTIFY_SOCKET") != nullptr;
  hookfs::fs::FsOptions fo;
  fo.policy = policy;
  if (mo->max_temp_links_per_user) fo.max_temp_links_per_user = *mo->max_temp_links_per_user;
  if (mo->temp_link_ttl) fo.temp_link_ttl = std::chrono::seconds(*mo->temp_link_ttl);
  hookfs::fs::IncomingLimits limits;
  if (mo->max_packs_per_user) limits.max_packs_per_user = *mo->max_packs_per_user;
  if (mo->pack_idle_timeout) limits.idle_timeout = std::chrono::seconds(*mo->pack_idle_timeout);
  fo.host = host_id;
  // -o keep=N: made before the loop starts, destroyed after the publish
  // workers stop and before the store closes (declared between them).
  std::unique_ptr<hookfs::fs::Retainer> retainer;
  if (notify || mo->keep) {
    fo.after_publish = [&opened, &store_dir, &mountpoint, &retainer, notify] {
      if (retainer) retainer->Kick();
      if (notify) hookfs::fs::Notify("STATUS=" + StatusLine(opened.ledger.get(), store_dir, mountpoint));
    };
  }
  hookfs::fs::HookFs fs(fo);
  // Joined after the session is unmounted and destroyed (declared before it):
  // its statfs then fails with ENOTCONN if the loop never served it.
  std::jthread ready;

  FuseArgs fa;
  fa.Add(argv[0]);
  if (debug) fa.Add("-d");
  std::string fuse_opts = "fsname=hookfs,subtype=hookfs,default_permissions";
  if (mo->allow_other) fuse_opts += ",allow_other";
  for (const std::string& o : mo->fuse) fuse_opts += "," + o;
  fa.Add("-o");
  fa.Add(fuse_opts);

  SessionOwner session;
  session.se = fuse_session_new(&fa.args, &hookfs::fs::HookFs::Ops(), sizeof(fuse_lowlevel_ops), &fs);
  if (!session.se) {
    spdlog::error("fuse_session_new failed (options: {})", fuse_opts);
    return 1;
  }
  if (fuse_set_signal_handlers(session.se) != 0) {
    spdlog::error("cannot install signal handlers");
    return 1;
  }
  session.handlers = true;
  if (fuse_session_mount(session.se, mountpoint.c_str()) != 0) {
    spdlog::error("cannot mount on {}", mountpoint);
    return 1;
  }
  session.mounted = true;
  if (::geteuid() == 0) {
    if (auto dev = hookfs::fs::MountDevice(mountpoint)) hookfs::fs::SetReadAhead(*dev, 1024);
  }
  if (fuse_daemonize(foreground ? 1 : 0) != 0) {
    spdlog::error("cannot daemonize");
    return 1;
  }
  if (!foreground) {
    auto o = OpenStore(store_dir);
    if (!o.ok()) {
      spdlog::error("store {}: {}", store_dir, o.status().ToString());
      return 1;  // SessionOwner unmounts
    }
    opened = std::move(o).value();
  }
  opened.incoming->SetLimits(limits);
  opened.incoming->set_require_signed(mo->require_signed);
  fs.Attach(opened.store.get(), opened.ledger.get(), opened.incoming.get());
  spdlog::info("hookfs: {} mounted on {} (uid {}, allow_other {}, publish_group {}, run_group {}, "
               "{} threads{}{})", store_dir, mountpoint, policy.owner_uid, mo->allow_other,
               mo->publish_group.value_or("-"), mo->run_group.value_or("-"), threads,
               config_path.empty() ? "" : ", config ", config_path);
  spdlog::info("host {}, admin_group {}, keep {}, require_signed {}", host_id, mo->admin_group.value_or("-"),
               mo->keep ? std::to_string(*mo->keep) : "-", mo->require_signed);

  // Helper threads never take SIGTERM/SIGINT/SIGHUP (libfuse blocks them in
  // its workers too): the handler then always runs where the loop waits.
  sigset_t term, saved;
  sigemptyset(&term);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&term, sig);
  pthread_sigmask(SIG_BLOCK, &term, &saved);
  if (mo->keep) retainer = std::make_unique<hookfs::fs::Retainer>(opened.store.get(), *mo->keep);
  // READY=1 once the kernel gets answers from this mount: a statfs through it
  // returns only when a loop thread has served INIT and STATFS.
  ready = std::jthread([&opened, store_dir, mountpoint] {
    if (!hookfs::fs::WaitUntilServing(mountpoint)) {
      spdlog::warn("{}: not serving (stopped before the first request?): READY not sent", mountpoint);
      return;
    }
    std::string status = StatusLine(opened.ledger.get(), store_dir, mountpoint);
    hookfs::fs::Notify("READY=1\nSTATUS=" + status);
    spdlog::info("ready: {}", status);
  });

  fs.StartInvalidators(session.se);
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  LoopConfig lc;
  fuse_loop_cfg_set_max_threads(lc.cfg, threads);
  fuse_loop_cfg_set_clone_fd(lc.cfg, 1);
  int rc = fuse_session_loop_mt(session.se, lc.cfg);
  hookfs::fs::Notify("STOPPING=1\nSTATUS=stopping: unmounting " + mountpoint);
  fs.StopPublishing();
  fs.StopInvalidators();
  spdlog::info("hookfs: unmounting {} (loop ended with {})", mountpoint, rc);
  // A signal ends the loop with the signal number: that is a clean stop.
  bool clean = rc == 0 || rc == SIGTERM || rc == SIGINT || rc == SIGHUP;
  if (!clean) spdlog::error("fuse loop ended with {}", rc);
  return clean ? 0 : 1;
  // session unmounts and is destroyed, then the store closes (reverse order).
}

}  // namespace

int main(int argc, char** argv) {
  hookfs::TuneAllocatorForApply();
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    spdlog::critical("hookfs: {}", e.what());
    return 1;
  }
}
