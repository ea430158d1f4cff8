#include "invalidator.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace hookfs::fs {

void Invalidator::Start(fuse_session* se, std::function<void()> tick, std::chrono::milliseconds period) {
  se_ = se;
  tick_ = std::move(tick);
  period_ = period;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
    running_ = true;
  }
  thread_ = std::thread([this] { Run(); });
}

void Invalidator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
    queue_.clear();
    done_ = queued_;
  }
  done_cv_.notify_all();
}

uint64_t Invalidator::Push(Item item) {
  uint64_t t;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.size() > 100000) return done_;
    queue_.push_back(std::move(item));
    t = ++queued_;
  }
  cv_.notify_one();
  return t;
}

uint64_t Invalidator::Entry(fuse_ino_t parent, std::string name) { return Push(Item{parent, std::move(name)}); }

uint64_t Invalidator::Inode(fuse_ino_t ino) { return Push(Item{ino, {}}); }

uint64_t Invalidator::Last() {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_;
}

bool Invalidator::WaitFor(uint64_t ticket, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!running_) return done_ >= ticket;
  return done_cv_.wait_for(lock, timeout, [&] { return done_ >= ticket || stop_; }) && done_ >= ticket;
}

void Invalidator::Run() {
  auto next_tick = std::chrono::steady_clock::now() + period_;
  for (;;) {
    Item item;
    bool tick = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto ready = [this] { return stop_ || !queue_.empty(); };
      if (tick_) {
        cv_.wait_until(lock, next_tick, ready);
      } else {
        cv_.wait(lock, ready);
      }
      if (stop_) return;
      if (queue_.empty()) {
        if (std::chrono::steady_clock::now() < next_tick) continue;  // spurious wakeup
        tick = true;
      } else {
        item = std::move(queue_.front());
        queue_.pop_front();
      }
    }
    if (tick) {
      next_tick = std::chrono::steady_clock::now() + period_;
      try {
        tick_();
      } catch (const std::exception& e) {
        spdlog::error("invalidator tick: {}", e.what());
      }
      continue;
    }
    int rc;
    if (item.name.empty()) {
      rc = fuse_lowlevel_notify_inval_inode(se_, item.ino, 0, 0);
    } else {
      rc = fuse_lowlevel_notify_inval_entry(se_, item.ino, item.name.data(), item.name.size());
    }
    // ENOENT: the kernel had nothing cached, which is fine.
    if (rc != 0 && rc != -ENOENT) {
      spdlog::debug("invalidate ino {} '{}': {}", item.ino, item.name, std::strerror(-rc));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++done_;
    }
    done_cv_.notify_all();
  }
}

}  // namespace hookfs::fs
