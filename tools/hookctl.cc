// hookctl: build, inspect and apply packs; show the ledger (DESIGN.md §3).
#include <csignal>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <optional>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "hookfs/apply.h"
#include "hookfs/fsck.h"
#include "hookfs/gc.h"
#include "hookfs/hash.h"
#include "hookfs/keys.h"
#include "hookfs/ledger.h"
#include "hookfs/retention.h"
#include "hookfs/signature.h"
#include "hookfs/pack.h"
#include "hookfs/store.h"
#include "hash_cache.h"
#include "packer.h"

namespace hookfs {
namespace {

using nlohmann::json;

// Exit codes: 0 success, 1 the pack or request was refused, 2 could not run.
constexpr int kRefused = 1;
constexpr int kFailed = 2;

int Fail(const Status& st) {
  std::fprintf(stderr, "hookctl: %s\n", st.ToString().c_str());
  return st.Is(Code::kMalformed) || st.Is(Code::kInvalidArgument) || st.Is(Code::kNotFound) ? kRefused : kFailed;
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& dir, bool create) {
  StoreOptions o;
  o.dir = dir.empty() ? Store::DefaultDir() : dir;
  o.create_if_missing = create;
  return Store::Open(o);
}

int CmdPack(const std::string& dir, PackOptions o, const std::string& against, std::string out) {
  if (out.empty()) {
    if (::isatty(STDOUT_FILENO))
      return Fail(Status::InvalidArgument("refusing to write a binary pack to a terminal; use -o FILE or redirect"));
    out = "-";
  }
  if (!against.empty()) {
    struct stat st;
    if (::stat((against + "/objects/trees").c_str(), &st) != 0)
      return Fail(Status::InvalidArgument("--against " + against + ": not a mounted hookfs (no objects/trees)"));
    o.has = MountHas(against);
  }
  if (const char* sde = std::getenv("SOURCE_DATE_EPOCH"); sde && *sde) o.created_at = std::atoll(sde);
  else o.created_at = NowMs() / 1000;
  o.progress = ::isatty(STDERR_FILENO);
  int fd = STDOUT_FILENO;
  std::string tmp;
  if (out != "-") {
    // A dot-named temporary beside OUT (as rsync does): in a mount's incoming/
    // a dot name is staging, so only the rename publishes, and it returns the
    // verdict. (OUT.tmp would itself be published on close.)
    size_t slash = out.rfind('/');
    std::string dir = slash == std::string::npos ? "" : out.substr(0, slash + 1);
    std::string base = slash == std::string::npos ? out : out.substr(slash + 1);
    tmp = dir + "." + base + ".XXXXXX";
    fd = ::mkostemp(tmp.data(), O_CLOEXEC);
    if (fd < 0) return Fail(Status::FromErrno(errno, "create " + tmp));
    mode_t mask = ::umask(0);
    ::umask(mask);
    (void)::fchmod(fd, 0666 & ~mask);  // mkstemp's 0600 would make a private pack
  }
  // A pipe's default 64 KiB makes pack | apply switch context every 64 KiB.
  if (out == "-") ::fcntl(fd, F_SETPIPE_SZ, 1 << 20);
  FdSink sink(fd, out == "-" ? "stdout" : tmp);
  auto stats = BuildPack(dir, o, &sink);
  Status st = stats.ok() ? sink.Flush() : stats.status();
  if (out != "-") {
    // No fsync: a pack is a transport file, checked end to end by its trailer.
    ::close(fd);
    if (st.ok() && ::rename(tmp.c_str(), out.c_str()) != 0) st = Status::FromErrno(errno, "rename to " + out);
    if (!st.ok()) ::unlink(tmp.c_str());
  }
  if (!st.ok()) return Fail(st);
  std::FILE* info = out == "-" ? stderr : stdout;
  std::fprintf(info, "%s\n", stats->digest.Hex().c_str());
  std::fprintf(stderr, "%s: %llu files (%llu hashed), %llu bytes; packed %llu blobs and %llu trees%s\n",
               o.hook.c_str(), (unsigned long long)stats->files, (unsigned long long)stats->files_hashed,
               (unsigned long long)stats->bytes,
               (unsigned long long)stats->blobs_written, (unsigned long long)stats->trees_written,
               o.has ? (", omitted " + std::to_string(stats->blobs_omitted) + " blobs and " +
                        std::to_string(stats->trees_omitted) + " trees the store has").c_str()
                     : "");
  return 0;
}

// Prints every record, recomputing each id the pack declares.
class InspectVisitor : public PackVisitor {
 public:
  int bad = 0;
  Status OnHook(const HookDecl& d) override {
    std::printf("hook     %s%s\n", d.name.c_str(), d.feature.empty() ? "" : (" feature=" + d.feature).c_str());
    return Status::OK();
  }
  Status OnBlobBegin(const ObjectId& id, uint64_t size, uint64_t) override {
    declared_ = id;
    size_ = size;
    return Status::OK();
  }
  Status OnBlobData(const void* p, size_t n) override {
    sha_.Update(p, n);
    return Status::OK();
  }
  Status OnBlobEnd() override {
    ObjectId got = sha_.Finish();
    bool ok = got == declared_;
    bad += !ok;
    std::printf("blob     %s %12llu%s\n", declared_.Hex().c_str(), (unsigned long long)size_,
                ok ? "" : ("  MISMATCH: hashes to " + got.Hex()).c_str());
    return Status::OK();
  }
  Status OnTree(const ObjectId& id, std::string_view enc, uint64_t) override {
    ObjectId got = Sha256::Of(enc);
    auto t = DecodeTree(enc);
    std::string problem = !t.ok() ? "  NOT CANONICAL: " + t.status().message()
                          : got != id ? "  MISMATCH: hashes to " + got.Hex() : "";
    bad += !problem.empty();
    std::printf("tree     %s %6zu entries%s\n", id.Hex().c_str(), t.ok() ? t->entries.size() : size_t(0),
                problem.c_str());
    return Status::OK();
  }
  Status OnSignature(std::string_view body) override {
    auto s = DecodeSignature(body);
    if (!s.ok()) std::printf("signature (does not decode: counts as none)\n");
    else
      std::printf("signature %s digest=%s key_id=%s%s\n", s->hook.c_str(), s->root.Hex().c_str(), s->key_id.Hex().c_str(),
                  s->algorithm == kSignatureEd25519 && s->signature.size() == kEd25519SigSize
                      ? " ed25519"
                      : ("  algorithm " + std::to_string(s->algorithm) + ": counts as none").c_str());
    return Status::OK();
  }
  Status OnRelease(const ReleaseRecord& r) override {
    std::printf("release  %s digest=%s%s created_at=%s source_ref=%s message=%s\n", r.hook.c_str(),
                r.root.Hex().c_str(), r.no_advance ? " no-advance" : "", FormatTime(r.created_at).c_str(),
                DumpJson(r.source_ref).c_str(), DumpJson(r.message).c_str());
    return Status::OK();
  }
  Status OnTimes(const TimesRecord& t) override {
    int64_t lo = 0, hi = 0;
    for (size_t i = 0; i < t.count; ++i) {
      lo = i ? std::min(lo, t.At(i)) : t.At(i);
      hi = i ? std::max(hi, t.At(i)) : t.At(i);
    }
    std::printf("times    %s digest=%s %u mtimes%s\n", t.hook.c_str(), t.root.Hex().c_str(), t.count,
                t.count ? (" from " + FormatTime(lo) + " to " + FormatTime(hi)).c_str() : "");
    return Status::OK();
  }

 private:
  Sha256 sha_;
  ObjectId declared_;
  uint64_t size_ = 0;
};

int CmdInspect(const std::string& file) {
  int fd = file == "-" ? STDIN_FILENO : ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Fail(Status::FromErrno(errno, "open " + file));
  InspectVisitor v;
  auto sum = ScanPack(fd, &v);
  if (fd != STDIN_FILENO) ::close(fd);
  if (!sum.ok()) return Fail(sum.status());
  std::printf("format   %u, %llu records, %llu bytes, trailer ok\n", sum->format_version,
              (unsigned long long)sum->records, (unsigned long long)sum->bytes);
  if (v.bad) {
    std::fprintf(stderr, "hookctl: %d object(s) do not hash to their declared id\n", v.bad);
    return kRefused;
  }
  return 0;
}

int CmdApply(const std::string& store_dir, const std::string& file) {
  auto store = OpenStore(store_dir, true);
  if (!store.ok()) return Fail(store.status());
  Ledger ledger(store->get());
  ApplyOptions opts;
  ApplyReport report;
  if (file == "-") {
    opts.pack_name = "stdin";
    ::fcntl(STDIN_FILENO, F_SETPIPE_SZ, 1 << 20);  // no-op unless stdin is a pipe
    report = ApplyPack(&ledger, STDIN_FILENO, opts);  // streamed: read once, in order
  } else {
    report = ApplyPackFile(&ledger, file, opts);
  }
  std::cout << DumpJson(report.ToJson(), 2) << std::endl;
  Status verdict = report.Verdict();
  if (!verdict.ok()) {
    std::fprintf(stderr, "hookctl: %s\n", verdict.ToString().c_str());
    return verdict.Is(Code::kMalformed) ? kRefused : kFailed;
  }
  return 0;
}

int CmdShow(const std::string& store_dir, const std::string& what) {
  auto store = OpenStore(store_dir, false);
  if (!store.ok()) return Fail(store.status());
  Ledger ledger(store->get());
  auto print = [](const json& j) { std::cout << DumpJson(j, 2) << std::endl; };
  if (what.empty()) {
    auto hooks = ledger.ListHooks();
    if (!hooks.ok()) return Fail(hooks.status());
    json out = json::array();
    for (const HookInfo& h : *hooks) {
      json j = ToJson(h);
      auto live = ledger.GetLive(h.name);
      auto rels = ledger.ListReleases(h.name);
      if (!live.ok()) return Fail(live.status());
      if (!rels.ok()) return Fail(rels.status());
      j["live"] = *live ? json(**live) : json(nullptr);
      j["releases"] = rels->size();
      out.push_back(j);
    }
    print(out);
    return 0;
  }
  std::string hook = what;
  uint32_t version = 0;
  if (auto slash = what.find('/'); slash != std::string::npos) {
    hook = what.substr(0, slash);
    char* end = nullptr;
    unsigned long v = std::strtoul(what.c_str() + slash + 1, &end, 10);
    if (*end || v == 0 || v > 0xffffffffu) return Fail(Status::InvalidArgument("bad release '" + what + "': want HOOK/N"));
    version = uint32_t(v);
  }
  if (version) {
    auto r = ledger.GetRelease(hook, version);
    if (!r.ok()) return Fail(r.status());
    print(ToJson(*r));
    return 0;
  }
  auto h = ledger.GetHook(hook);
  if (!h.ok()) return Fail(h.status());
  json j = ToJson(*h);
  auto live = ledger.GetLive(hook);
  auto tags = ledger.ListTags(hook);
  auto rels = ledger.ListReleases(hook);
  auto hist = ledger.History(hook);
  auto runs = ledger.ListRuns(hook);
  for (const Status* st : {&live.status(), &tags.status(), &rels.status(), &hist.status(), &runs.status()})
    if (!st->ok()) return Fail(*st);
  j["live"] = *live ? json(**live) : json(nullptr);
  j["tags"] = *tags;
  j["releases"] = json::array();
  for (const auto& r : *rels) j["releases"].push_back(ToJson(r));
  j["history"] = json::array();
  for (const auto& m : *hist) j["history"].push_back(ToJson(m));
  j["runs"] = json::array();
  for (const auto& r : *runs) j["runs"].push_back(ToJson(r));
  print(j);
  return 0;
}

// A progress line on stderr when it is a terminal, at most 5 times a second.
class ProgressLine {
 public:
  ProgressLine() : on_(::isatty(STDERR_FILENO)) {}
  ~ProgressLine() { Clear(); }
  void Update(std::string_view phase, uint64_t done, uint64_t total) {
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    if (phase == "blobs" && total)
      std::fprintf(stderr, "\rhookctl: verifying blobs: %llu / %llu MiB (%d%%)   ", (unsigned long long)(done >> 20),
                   (unsigned long long)(total >> 20), int(done * 100 / total));
    else
      std::fprintf(stderr, "\rhookctl: %.*s: %llu                          ", int(phase.size()), phase.data(),
                   (unsigned long long)done);
    shown_ = true;
  }
  void Clear() {
    if (shown_) std::fprintf(stderr, "\r%60s\r", "");
    shown_ = false;
  }

 private:
  bool on_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

// Exit 0 clean, 1 damage found, 2 could not run.
int CmdFsck(const std::string& store_dir, bool repair, bool as_json) {
  StoreOptions o;
  o.dir = store_dir.empty() ? Store::DefaultDir() : store_dir;
  o.create_if_missing = false;
  o.exclusive = repair;
  auto store = Store::Open(o);
  if (!store.ok()) {
    std::fprintf(stderr, "hookctl: fsck could not run: %s\n", store.status().ToString().c_str());
    return kFailed;
  }
  ProgressLine line;
  FsckOptions fo;
  fo.repair = repair;
  fo.progress = [&](std::string_view phase, uint64_t done, uint64_t total) { line.Update(phase, done, total); };
  auto t0 = std::chrono::steady_clock::now();
  auto report = Fsck(store->get(), fo);
  line.Clear();
  if (!report.ok()) {
    std::fprintf(stderr, "hookctl: fsck could not run: %s\n", report.status().ToString().c_str());
    return kFailed;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (as_json) {
    json j = report->ToJson();
    j["seconds"] = secs;
    std::cout << DumpJson(j, 2) << std::endl;
  } else {
    std::cout << "fsck " << o.dir << " (" << std::fixed << std::setprecision(1) << secs << " s): " << report->Summary()
              << std::flush;
  }
  return report->clean() ? 0 : kRefused;
}

int CmdGc(const std::string& store_dir, bool as_json, uint32_t keep) {
  auto store = OpenStore(store_dir, false);
  if (!store.ok()) return Fail(store.status());
  if (keep) {
    RetentionOptions ro;
    ro.keep = keep;
    auto rep = ApplyRetention(store->get(), ro);
    if (!rep.ok()) return Fail(rep.status());
    if (as_json) std::cout << DumpJson(rep->ToJson(), 2) << std::endl;
    else std::cout << rep->Summary() << std::flush;
    return 0;
  }
  auto report = CollectGarbage(store->get(), {});
  if (!report.ok()) return Fail(report.status());
  if (as_json) std::cout << DumpJson(report->ToJson(), 2) << std::endl;
  else std::cout << report->Summary() << std::flush;
  return 0;
}

int CmdKeygen(const std::string& prefix) {
  auto pub = GenerateKeyFiles(prefix);
  if (!pub.ok()) return Fail(pub.status());
  std::printf("%s\n", pub->KeyId().Hex().c_str());
  std::fprintf(stderr, "wrote %s.key (private, mode 0600) and %s.pub; trust it with a key document:\n"
               "  {\"public_key\": <text of %s.pub>, \"hooks\": [\"PATTERN\", ...]}\n",
               prefix.c_str(), prefix.c_str(), prefix.c_str());
  return 0;
}

Result<std::string> ReadText(const std::string& path) {
  int fd = path == "-" ? STDIN_FILENO : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, size_t(n));
    if (out.size() > kMaxKeyDocument) break;
  }
  if (fd != STDIN_FILENO) ::close(fd);
  return out;
}

// key add NAME (DOCUMENT | --pub FILE --hook PATTERN...), key rm NAME, key list.
int CmdKey(const std::string& store_dir, const std::string& action, const std::string& name,
           const std::string& document, const std::string& pub, const std::vector<std::string>& patterns) {
  auto store = OpenStore(store_dir, action == "add");
  if (!store.ok()) return Fail(store.status());
  KeyRing ring(store->get());
  if (action == "list") {
    auto keys = ring.List();
    if (!keys.ok()) return Fail(keys.status());
    json out = json::array();
    for (const KeyInfo& k : *keys) out.push_back(ToJson(k));
    std::cout << DumpJson(out, 2) << std::endl;
    return 0;
  }
  if (name.empty()) return Fail(Status::InvalidArgument("key " + action + " needs a NAME"));
  if (action == "rm") {
    Status st = ring.Remove(name, Actor::Current());
    return st.ok() ? 0 : Fail(st);
  }
  std::string doc;
  if (!pub.empty()) {
    if (!document.empty()) return Fail(Status::InvalidArgument("give a DOCUMENT or --pub, not both"));
    auto pem = ReadText(pub);
    if (!pem.ok()) return Fail(pem.status());
    doc = DumpJson(json{{"public_key", *pem}, {"hooks", patterns}});
  } else {
    if (document.empty()) return Fail(Status::InvalidArgument("key add needs a DOCUMENT (JSON file, or -) or --pub"));
    auto text = ReadText(document);
    if (!text.ok()) return Fail(text.status());
    doc = *text;
  }
  auto k = ring.Add(name, doc, Actor::Current());
  if (!k.ok()) return Fail(k.status());
  std::cout << DumpJson(ToJson(*k), 2) << std::endl;
  return 0;
}

}  // namespace
}  // namespace hookfs

int main(int argc, char** argv) {
  using namespace hookfs;
  TuneAllocatorForApply();
  // `apply FILE` seals the pack with a read lease; a writer breaking it
  // must fail the apply (it checks), not kill it with SIGIO.
  std::signal(SIGIO, SIG_IGN);
  spdlog::set_default_logger(spdlog::stderr_logger_mt("hookctl"));
  spdlog::set_pattern("hookctl: %v");
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL=debug shows apply's phase timings
  CLI::App app{"hookctl: build, inspect and apply hookfs packs; show the ledger"};
  app.require_subcommand(1);
  const std::string store_help = "store directory (default: $HOOKFS_STORE, else /var/lib/hookfs as root, else "
                                 "${XDG_DATA_HOME:-~/.local/share}/hookfs)";

  PackOptions po;
  std::string pack_dir, against, out;
  auto* pack = app.add_subcommand("pack", "build a pack from a directory; prints the release digest");
  pack->add_option("--hook", po.hook, "hook name")->required();
  pack->add_option("--feature", po.feature, "the hook's output contract");
  pack->add_option("--source-ref", po.source_ref, "where the content came from (commit, tag, URL)");
  pack->add_option("--message", po.message, "a note for humans");
  pack->add_flag("--no-advance", po.no_advance, "do not move live to the new release");
  bool no_mtimes = false;
  pack->add_flag("--no-mtimes", no_mtimes,
                 "do not record file modification times (a version-1 pack; files show the commit time)");
  pack->add_option("--against", against, "mounted hookfs: omit objects it already has (thin pack)");
  pack->add_option("-o,--output", out, "output file, or - for stdout (default: stdout when it is not a terminal)");
  bool no_cache = false;
  pack->add_flag("--no-cache", no_cache,
                 "hash every file; by default ids are remembered by inode and timestamps in "
                 "$HOOKFS_HASH_CACHE or ${XDG_CACHE_HOME:-~/.cache}/hookfs");
  std::string sign_key;
  pack->add_option("--sign", sign_key, "sign the release with this Ed25519 private key (hookctl keygen's NAME.key)");
  pack->add_option("DIR", pack_dir, "directory to pack")->required();

  std::string inspect_file;
  auto* inspect = app.add_subcommand("inspect", "list a pack's hooks, objects, releases and digests, verifying each id");
  inspect->add_option("FILE", inspect_file, "pack file, or -")->required();

  std::string store_dir, apply_file;
  auto* apply = app.add_subcommand("apply", "apply a pack offline (same semantics as incoming/)");
  apply->add_option("--store", store_dir, store_help);
  apply->add_option("FILE", apply_file, "pack file, or -")->required();

  std::string show_what;
  auto* show = app.add_subcommand("show", "hooks, releases, pointers, runs from the ledger");
  show->add_option("--store", store_dir, store_help);
  show->add_option("WHAT", show_what, "HOOK or HOOK/N (default: all hooks)");

  bool repair = false, fsck_json = false;
  auto* fsck = app.add_subcommand("fsck", "verify every object and ledger record; report; --repair what can be");
  fsck->add_option("--store", store_dir, store_help);
  fsck->add_flag("--repair", repair,
                 "quarantine damaged objects, mark the releases reaching them damaged, rebuild derived records, "
                 "reclaim leftovers (refused while the store is mounted)");
  fsck->add_flag("--json", fsck_json, "print the report as JSON");

  bool gc_json = false;
  auto* gc = app.add_subcommand("gc", "drop objects no release reaches (safe while the store is mounted)");
  gc->add_option("--store", store_dir, store_help);
  gc->add_flag("--json", gc_json, "print the report as JSON");
  uint32_t gc_keep = 0;
  gc->add_option("--keep", gc_keep,
                 "first prune releases outside retention: keep per hook the newest N, live and tag targets, "
                 "and releases of open runs or runs finished in the last 7 days")
      ->check(CLI::Range(1u, 0xffffffffu));

  std::string keygen_out;
  auto* keygen = app.add_subcommand("keygen", "write NAME.key (Ed25519 private key, PEM, mode 0600) and NAME.pub");
  keygen->add_option("-o,--output", keygen_out, "NAME: the files' path without .key/.pub")->required();

  std::string key_action, key_name, key_doc, key_pub;
  std::vector<std::string> key_patterns;
  auto* key = app.add_subcommand("key", "trust, revoke and list signing keys in a store (offline MNT/keys/)");
  key->add_option("ACTION", key_action, "add, rm or list")->required()->check(CLI::IsMember({"add", "rm", "list"}));
  key->add_option("NAME", key_name, "the key's name");
  key->add_option("DOCUMENT", key_doc, "add: key document {\"public_key\": PEM, \"hooks\": [...]} (file, or -)");
  key->add_option("--pub", key_pub, "add: public key PEM file (instead of a DOCUMENT)");
  key->add_option("--hook", key_patterns, "add with --pub: a hook pattern the key covers (repeatable)")->allow_extra_args(false);
  key->add_option("--store", store_dir, store_help);

  CLI11_PARSE(app, argc, argv);
  if (*fsck) return CmdFsck(store_dir, repair, fsck_json);
  if (*gc) return CmdGc(store_dir, gc_json, gc_keep);
  if (*keygen) return CmdKeygen(keygen_out);
  if (*key) return CmdKey(store_dir, key_action, key_name, key_doc, key_pub, key_patterns);
  if (*pack) {
    if (!no_cache) po.hash_cache_dir = HashCache::DefaultDir();
    po.mtimes = !no_mtimes;
    std::optional<SigningKey> signer;
    if (!sign_key.empty()) {
      auto k = SigningKey::Load(sign_key);
      if (!k.ok()) return Fail(k.status());
      signer.emplace(std::move(k).value());
      po.signer = &*signer;
    }
    return CmdPack(pack_dir, po, against, out);
  }
  if (*inspect) return CmdInspect(inspect_file);
  if (*apply) return CmdApply(store_dir, apply_file);
  if (*show) return CmdShow(store_dir, show_what);
  return 2;
}
