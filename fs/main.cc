// hookfs: mount a hookfs store (DESIGN.md §2–§4, docs/mount.md).
//
//   hookfs [--store DIR] [-f] [-o allow_other,publish_group=G,run_group=G,...]
//          [--log-level L] MOUNTPOINT
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <unistd.h>

#include <climits>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "hookfs/ledger.h"
#include "hookfs/store.h"
#include "hookfs_fs.h"
#include "incoming.h"
#include "lifecycle.h"
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

int Run(int argc, char** argv) {
  CLI::App app{"hookfs: mount a hookfs store"};
  std::string store_dir, mountpoint, log_level = "info";
  bool foreground = false, debug = false;
  std::vector<std::string> opts;
  unsigned threads = 8;
  app.add_option("--store", store_dir, "store directory (default: $HOOKFS_STORE, /var/lib/hookfs as root, else ~/.local/share/hookfs)");
  app.add_flag("-f,--foreground", foreground, "stay in the foreground");
  app.add_flag("-d,--debug", debug, "libfuse debug output (implies -f)");
  app.add_option("-o", opts, "mount options: allow_other,publish_group=G,run_group=G,...")->take_all();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--threads", threads, "FUSE worker threads")->check(CLI::Range(1u, 64u));
  app.add_option("MOUNTPOINT", mountpoint, "where to mount")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (debug) foreground = true;

  auto logger = spdlog::stderr_color_mt("hookfs");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::flush_on(spdlog::level::info);

  auto mo = hookfs::fs::ParseMountOptions(opts);
  if (!mo.ok()) {
    spdlog::error("{}", mo.status().message());
    return 2;
  }
  hookfs::fs::Policy policy;
  policy.owner_uid = ::getuid();
  policy.owner_gid = ::getgid();
  for (auto [name, out] : {std::pair{mo->publish_group, &policy.publish_gid},
                           std::pair{mo->run_group, &policy.run_gid}}) {
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

  hookfs::fs::FsOptions fo;
  fo.policy = policy;
  hookfs::fs::HookFs fs(fo);

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
  fs.Attach(opened.store.get(), opened.ledger.get(), opened.incoming.get());
  spdlog::info("hookfs: {} mounted on {} (uid {}, allow_other {}, {} threads)", store_dir,
               mountpoint, policy.owner_uid, mo->allow_other, threads);

  fs.invalidator().Start(session.se);
  LoopConfig lc;
  fuse_loop_cfg_set_max_threads(lc.cfg, threads);
  fuse_loop_cfg_set_clone_fd(lc.cfg, 1);
  int rc = fuse_session_loop_mt(session.se, lc.cfg);
  fs.invalidator().Stop();
  spdlog::info("hookfs: unmounting {}", mountpoint);
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
