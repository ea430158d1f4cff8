// The publish queue: applies run on a few apply workers, never on the FUSE
// workers, so reads always find a free worker while packs are applied
// (DESIGN.md §5.7, §6; docs/namespace.md "Publish queue"). A job carries the
// request it answers and replies itself when the verdict is known (libfuse
// low-level allows a reply from any thread), so close() still returns it.
//
// Bounded: Submit blocks while `capacity` jobs wait, which pushes back on
// the FUSE workers only when that many publishes are already queued.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hookfs::fs {

class PublishQueue {
 public:
  PublishQueue(size_t workers, size_t capacity);
  ~PublishQueue() { Stop(); }
  PublishQueue(const PublishQueue&) = delete;
  PublishQueue& operator=(const PublishQueue&) = delete;

  // Queues `job` (it must not throw). After Stop, runs it on the caller.
  void Submit(std::function<void()> job);
  // Runs what is queued, then joins the workers. Idempotent.
  void Stop();

  size_t waiting() const;
  size_t running() const;

 private:
  void Run();

  const size_t capacity_;
  // Leaf lock: jobs run outside it.
  mutable std::mutex mu_;
  std::condition_variable has_job_;
  std::condition_variable has_room_;
  std::deque<std::function<void()>> jobs_;
  size_t running_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace hookfs::fs
