#include "retainer.h"

#include <spdlog/spdlog.h>

#include "hookfs/retention.h"

namespace hookfs::fs {

Retainer::Retainer(Store* store, uint32_t keep, std::function<void()> after_pass)
    : store_(store), keep_(keep), after_pass_(std::move(after_pass)),
      thread_([this](std::stop_token st) { Loop(st); }) {}

Retainer::~Retainer() {
  thread_.request_stop();
  cv_.notify_all();
}

void Retainer::Kick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    kicked_ = true;
  }
  cv_.notify_all();
}

uint64_t Retainer::passes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return passes_;
}

void Retainer::Loop(std::stop_token stop) {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait(lock, stop, [this] { return kicked_; })) return;
      kicked_ = false;
    }
    RetentionOptions o;
    o.keep = keep_;
    auto r = ApplyRetention(store_, o);
    if (!r.ok()) {
      spdlog::error("retention (keep={}): {}", keep_, r.status().ToString());
    } else if (!r->prune.pruned.empty()) {
      spdlog::info("{}", r->Summary());
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++passes_;
    }
    if (after_pass_) after_pass_();
  }
}

}  // namespace hookfs::fs
