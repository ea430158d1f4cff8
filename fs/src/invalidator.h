// The invalidation thread: the only place that calls
// fuse_lowlevel_notify_inval_entry/inode. Handlers enqueue and return; calling
// the notify functions from inside a request handler can deadlock the mount
// (docs/mount.md "Invalidation"). The thread holds no filesystem lock while it
// notifies.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <condition_variable>
#include <deque>
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

  void Start(fuse_session* se);
  void Stop();

  // The dentry `name` in directory `parent`.
  void Entry(fuse_ino_t parent, std::string name);
  // Attributes and cached data (symlink target) of `ino`.
  void Inode(fuse_ino_t ino);

 private:
  struct Item {
    fuse_ino_t ino;
    std::string name;  // empty: an inode
  };
  void Run();

  fuse_session* se_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace hookfs::fs
