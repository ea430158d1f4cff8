// Status and Result<T>: the one error type of hookfs.
//
// Every fallible call returns a Status (or a Result<T> carrying one). No
// exception crosses a library boundary or a FUSE callback. Each code maps to
// exactly one errno (ToErrno) so the mount can answer with what ordinary tools
// print well. Messages carry context ("blob 3fa1…: chunk 2 checksum mismatch").
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace hookfs {

enum class Code {
  kOk = 0,
  kNotFound,         // ENOENT
  kCorruption,       // EIO: stored bytes do not match their checksum or id
  kInvalidArgument,  // EINVAL: bad name, bad pointer target, bad option
  kMalformed,        // EBADMSG: a pack or record that does not parse or verify
  kIOError,          // EIO: the OS or LMDB failed
  kNoSpace,          // ENOSPC: disk or map full
  kExists,           // EEXIST
  kPermissionDenied, // EACCES
  kReadOnly,         // EROFS
  kNotPermitted,     // EPERM: the operation is never allowed on this object
  kUnsupported,      // EPROTO: unknown store or pack format version
  kBusy,             // EBUSY
  kTimedOut,         // ETIMEDOUT: a remote service (etcd, S3) did not answer within its deadline
  kQuota,            // EDQUOT: a per-user limit (open packs, temporary symlinks) reached
};

class Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status Corruption(std::string m) { return {Code::kCorruption, std::move(m)}; }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status Malformed(std::string m) { return {Code::kMalformed, std::move(m)}; }
  static Status IOError(std::string m) { return {Code::kIOError, std::move(m)}; }
  static Status NoSpace(std::string m) { return {Code::kNoSpace, std::move(m)}; }
  static Status Exists(std::string m) { return {Code::kExists, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
  static Status ReadOnly(std::string m) { return {Code::kReadOnly, std::move(m)}; }
  static Status NotPermitted(std::string m) { return {Code::kNotPermitted, std::move(m)}; }
  static Status Unsupported(std::string m) { return {Code::kUnsupported, std::move(m)}; }
  static Status Busy(std::string m) { return {Code::kBusy, std::move(m)}; }
  static Status TimedOut(std::string m) { return {Code::kTimedOut, std::move(m)}; }
  static Status Quota(std::string m) { return {Code::kQuota, std::move(m)}; }
  // From an errno value, e.g. after a failed read(2).
  static Status FromErrno(int err, std::string_view context);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  bool Is(Code c) const { return code_ == c; }

  // "Corruption: blob 3fa1…: chunk 2 checksum mismatch"
  std::string ToString() const;
  int ToErrno() const;
  static const char* CodeName(Code c);

  // Prefix the message with more context, keeping the code.
  Status Context(std::string_view prefix) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

// A value or the Status saying why there is none.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {   // NOLINT
    assert(!status_.ok() && "Result from an OK status needs a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace hookfs

#define HOOKFS_CONCAT_INNER(a, b) a##b
#define HOOKFS_CONCAT(a, b) HOOKFS_CONCAT_INNER(a, b)

#define HOOKFS_RETURN_IF_ERROR(expr)              \
  do {                                            \
    ::hookfs::Status _hookfs_st = (expr);         \
    if (!_hookfs_st.ok()) return _hookfs_st;      \
  } while (0)

#define HOOKFS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#define HOOKFS_ASSIGN_OR_RETURN(lhs, expr) \
  HOOKFS_ASSIGN_OR_RETURN_IMPL(HOOKFS_CONCAT(_hookfs_r_, __LINE__), lhs, expr)
