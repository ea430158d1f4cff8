#include "invalidator.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace hookfs::fs {

void Invalidator::Start(fuse_session* se) {
  se_ = se;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void Invalidator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Invalidator::Entry(fuse_ino_t parent, std::string name) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.size() > 100000) return;
    queue_.push_back(Item{parent, std::move(name)});
  }
  cv_.notify_one();
}

void Invalidator::Inode(fuse_ino_t ino) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || queue_.size() > 100000) return;
    queue_.push_back(Item{ino, {}});
  }
  cv_.notify_one();
}

void Invalidator::Run() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
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
  }
}

}  // namespace hookfs::fs
