// libFuzzer target: pack parsing and apply (docs/integrity.md, "Fuzzing").
//
// Each input is (1) scanned as is (framing, limits, trailer), and (2) applied
// into a fresh temporary store with its XXH3-128 trailer recomputed, so that
// mutations reach apply's logic instead of dying at the trailer check (all
// packs that then scan, 1 in 8 of those that do not). The
// oracle, beyond the sanitizers: whatever the input, the store afterwards is
// fsck-clean (no problem at all: nothing dangling, nothing pending), and the
// process's peak RSS stays under a bound (HOOKFS_FUZZ_RSS_MB, default 768:
// the 256 MiB an apply may take, plus the sanitizers' and libFuzzer's own).
// Seeds include the adversarial packs of issue 9 (sparse-*, empty-blob-*).
// Every store trusts one fixed Ed25519 key for hooks matching `s*`, so the
// signed seeds (corpus/signed*.pack: hooks `signed`, `stamper`, `sother`,
// signed by that key, over a changed message, and by another key) reach the
// signature check of DESIGN.md §8 (the private key is not kept).
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "hookfs/apply.h"
#include "hookfs/fsck.h"
#include "hookfs/hash.h"
#include "hookfs/keys.h"
#include "hookfs/ledger.h"
#include "hookfs/pack.h"
#include "hookfs/store.h"

namespace {

int MemFd(const uint8_t* data, size_t size) {
  int fd = ::memfd_create("pack", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  size_t off = 0;
  while (off < size) {
    ssize_t n = ::write(fd, data + off, size - off);
    if (n <= 0) std::abort();
    off += size_t(n);
  }
  if (::lseek(fd, 0, SEEK_SET) != 0) std::abort();
  return fd;
}

long RssBoundKiB() {
  const char* m = std::getenv("HOOKFS_FUZZ_RSS_MB");
  return (m && *m ? std::atol(m) : 768) * 1024;
}

std::string BaseDir() {
  const char* t = std::getenv("HOOKFS_FUZZ_DIR");
  if (t && *t) return t;
  return ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hookfs;
  {
    int fd = MemFd(data, size);
    PackVisitor nothing;
    (void)ScanPack(fd, &nothing);
    ::close(fd);
  }
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (bytes.size() >= kPackHeaderSize + kPackTrailerSize) {
    Xxh3_128 h;
    h.Update(bytes.data(), bytes.size() - 16);
    auto d = h.Digest();
    std::memcpy(bytes.data() + bytes.size() - 16, d.data(), 16);
  }
  // A store per input is the slow part: use it for packs that scan (the
  // interesting ones for apply) and for a fixed 1 in 8 of the others, which
  // still exercises reclaiming chunks of a pack that fails mid-stream.
  {
    int fd = MemFd(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    PackVisitor nothing;
    bool scans = ScanPack(fd, &nothing).ok();
    ::close(fd);
    if (!scans && Xxh3_64(bytes.data(), bytes.size()) % 8 != 0) return 0;
  }
  std::string tmpl = BaseDir() + "/hookfs-fuzz-XXXXXX";
  if (!::mkdtemp(tmpl.data())) std::abort();
  {
    StoreOptions o;
    o.dir = tmpl + "/s";
    o.map_size = 256ull << 20;
    auto store = Store::Open(o);
    if (!store.ok()) {
      std::fprintf(stderr, "store: %s\n", store.status().ToString().c_str());
      std::abort();
    }
    Ledger ledger(store->get());
    {
      static const char* kSeedKey =
          "-----BEGIN PUBLIC KEY-----\n"
          "MCowBQYDK2VwAyEAHG0mDExfhm+tSJR8Jyifj6SHJ/dc0rr5QD2LPVLjfjg=\n"
          "-----END PUBLIC KEY-----\n";
      KeyRing ring(store->get());
      auto k = ring.Add("seed", nlohmann::json{{"public_key", kSeedKey}, {"hooks", {"s*"}}}.dump(), Actor{0, "fuzz"});
      if (!k.ok()) {
        std::fprintf(stderr, "key: %s\n", k.status().ToString().c_str());
        std::abort();
      }
    }
    int fd = MemFd(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ApplyOptions ao;
    ao.pack_name = "fuzz";
    ApplyReport rep = ApplyPack(&ledger, fd, ao);
    ::close(fd);
    (void)rep.ToJson().dump();
    if (!rep.status.ok() && !rep.status.Is(Code::kMalformed)) {
      std::fprintf(stderr, "apply failed with a store error: %s\n", rep.status.ToString().c_str());
      std::abort();
    }
    auto fr = Fsck(store->get(), {});
    if (!fr.ok() || !fr->problems.empty()) {
      std::fprintf(stderr, "store not clean after apply: %s\n",
                   fr.ok() ? fr->Summary().c_str() : fr.status().ToString().c_str());
      std::abort();
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
  struct rusage ru;
  ::getrusage(RUSAGE_SELF, &ru);
  if (ru.ru_maxrss > RssBoundKiB()) {
    std::fprintf(stderr, "peak RSS %ld MiB exceeds the bound of %ld MiB\n", ru.ru_maxrss / 1024, RssBoundKiB() / 1024);
    std::abort();
  }
  return 0;
}
