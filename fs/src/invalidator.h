// An invalidation thread: the only places that call
// fuse_lowlevel_notify_inval_entry/inode. Handlers enqueue and return; calling
// the notify functions from inside a request handler can deadlock the mount
// (docs/mount.md "Invalidation"). The thread holds no filesystem lock while it
// notifies.
//
// The adapter runs two: one for incoming/ and runs, one for pointers (live,
// tags). Only the pointer one is ever waited for (WaitFor, by a publish job
// before it replies): its items lie in hooks/NAME and tags/, whose directory
// locks are held only by handlers that never wait for an invalidator, so the
// wait always ends (and is bounded anyway).
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace hookfs::fs {

class Invalidator {
 public:
  Invalidator() = default;
  ~Invalidator() { Stop(); }
  Invalidator(const Invalidator&) = delete;
  Invalidator& operator=(const Invalidator&) = delete;

  // `tick`, if set, runs on the thread every `period` while idle (outside
  // mu_): the pointer invalidator polls the store for moves made by other
  // processes. It may enqueue.
  void Start(fuse_session* se, std::function<void()> tick = nullptr,
             std::chrono::milliseconds period = std::chrono::milliseconds(100));
  void Stop();

  // The dentry `name` in directory `parent`. Returns a ticket for WaitFor.
  uint64_t Entry(fuse_ino_t parent, std::string name);
  // Attributes and cached data (symlink target) of `ino`.
  uint64_t Inode(fuse_ino_t ino);
  // Waits until every item up to `ticket` was notified; false on timeout or
  // when the thread is not running (then the items go out later).
  bool WaitFor(uint64_t ticket, std::chrono::milliseconds timeout);
  // The ticket of the last item queued.
  uint64_t Last();

 private:
  struct Item {
    fuse_ino_t ino;
    std::string name;  // empty: an inode
  };
  uint64_t Push(Item item);
  void Run();

  fuse_session* se_ = nullptr;
  std::function<void()> tick_;
  std::chrono::milliseconds period_{100};
  std::mutex mu_;  // leaf lock
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::deque<Item> queue_;
  uint64_t queued_ = 0;  // tickets handed out
  uint64_t done_ = 0;    // tickets notified (or dropped at stop)
  bool stop_ = false;
  bool running_ = false;
  std::thread thread_;
};

}  // namespace hookfs::fs
