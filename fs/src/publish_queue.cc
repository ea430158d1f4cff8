#include "publish_queue.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

namespace hookfs::fs {

PublishQueue::PublishQueue(size_t workers, size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {
  // Workers never take SIGTERM/SIGINT/SIGHUP: the daemon's handler runs where
  // the FUSE loop waits (docs/service.md).
  sigset_t term, saved;
  sigemptyset(&term);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&term, sig);
  pthread_sigmask(SIG_BLOCK, &term, &saved);
  for (size_t i = 0; i < (workers == 0 ? 1 : workers); ++i) workers_.emplace_back([this] { Run(); });
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

void PublishQueue::Submit(std::function<void()> job) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    has_room_.wait(lock, [this] { return stop_ || jobs_.size() < capacity_; });
    if (!stop_) {
      jobs_.push_back(std::move(job));
      has_job_.notify_one();
      return;
    }
  }
  job();  // stopping: nobody else will run it
}

void PublishQueue::Run() {
  // Applies yield the CPU to the FUSE workers: on a busy host a read of
  // something committed must not wait behind hashing (DESIGN §5.7). Best
  // effort (per-thread nice on Linux).
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    has_job_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping and drained
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    ++running_;
    has_room_.notify_one();
    lock.unlock();
    job();
    lock.lock();
    --running_;
  }
}

void PublishQueue::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && workers_.empty()) return;
    stop_ = true;
  }
  has_job_.notify_all();
  has_room_.notify_all();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  workers_.clear();
}

size_t PublishQueue::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size();
}

size_t PublishQueue::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

}  // namespace hookfs::fs
