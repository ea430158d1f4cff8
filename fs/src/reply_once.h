// One reply per request (issue 8 j). The trampolines open a ReplyScope around
// each handler; every reply of the adapter claims the request first, so the
// catch-all's EIO is sent only when the handler had not replied yet. A request
// handed to another thread (the publish queue) is claimed by the hand-off and
// answered there exactly once. FUSE-free so that it is unit-tested.
#pragma once

namespace hookfs::fs {

class ReplyScope {
 public:
  explicit ReplyScope(const void* req) : req_(req), outer_(current_) { current_ = this; }
  ~ReplyScope() { current_ = outer_; }
  ReplyScope(const ReplyScope&) = delete;
  ReplyScope& operator=(const ReplyScope&) = delete;

  // True if `req` may be replied to now: the first claim of the request this
  // thread is handling, or a request this thread does not handle (a job
  // answering a handed-off request). False for a second reply.
  static bool Claim(const void* req) {
    ReplyScope* s = current_;
    if (s == nullptr || s->req_ != req) return true;
    if (s->replied_) return false;
    s->replied_ = true;
    return true;
  }
  bool replied() const { return replied_; }

 private:
  const void* req_;
  ReplyScope* outer_;
  bool replied_ = false;
  static inline thread_local ReplyScope* current_ = nullptr;
};

}  // namespace hookfs::fs
