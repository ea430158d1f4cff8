// -o keep=N: the daemon's retention (DESIGN.md §7, docs/retention.md).
//
// One thread of its own runs ApplyRetention (prune, then gc) once at start
// and again after publishes (Kick). Kicks while a pass runs coalesce into one
// more pass. Never on a FUSE worker or an apply worker: Kick only sets a flag.
// Safety beside publishes, moves and run starts is ApplyRetention's (one
// write txn per hook; the ledger refuses pruned targets).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "hookfs/store.h"

namespace hookfs::fs {

class Retainer {
 public:
  // `after_pass`: called on the thread after each pass (tests; main: nothing).
  Retainer(Store* store, uint32_t keep, std::function<void()> after_pass = {});
  ~Retainer();  // stops and joins
  Retainer(const Retainer&) = delete;
  Retainer& operator=(const Retainer&) = delete;

  void Kick();
  uint64_t passes() const;

 private:
  void Loop(std::stop_token stop);

  Store* store_;
  uint32_t keep_;
  std::function<void()> after_pass_;
  mutable std::mutex mu_;  // leaf lock: guards kicked_, passes_
  std::condition_variable_any cv_;
  bool kicked_ = true;  // the pass at start
  uint64_t passes_ = 0;
  std::jthread thread_;  // last: starts after the members above exist
};

}  // namespace hookfs::fs
