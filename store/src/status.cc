#include "hookfs/status.h"

#include <cerrno>
#include <cstring>

namespace hookfs {

const char* Status::CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "OK";
    case Code::kNotFound: return "NotFound";
    case Code::kCorruption: return "Corruption";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kMalformed: return "Malformed";
    case Code::kIOError: return "IOError";
    case Code::kNoSpace: return "NoSpace";
    case Code::kExists: return "Exists";
    case Code::kPermissionDenied: return "PermissionDenied";
    case Code::kReadOnly: return "ReadOnly";
    case Code::kNotPermitted: return "NotPermitted";
    case Code::kUnsupported: return "Unsupported";
    case Code::kBusy: return "Busy";
    case Code::kTimedOut: return "TimedOut";
    case Code::kQuota: return "Quota";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(code_);
  if (!message_.empty()) s += ": " + message_;
  return s;
}

int Status::ToErrno() const {
  switch (code_) {
    case Code::kOk: return 0;
    case Code::kNotFound: return ENOENT;
    case Code::kCorruption: return EIO;
    case Code::kInvalidArgument: return EINVAL;
    case Code::kMalformed: return EBADMSG;
    case Code::kIOError: return EIO;
    case Code::kNoSpace: return ENOSPC;
    case Code::kExists: return EEXIST;
    case Code::kPermissionDenied: return EACCES;
    case Code::kReadOnly: return EROFS;
    case Code::kNotPermitted: return EPERM;
    case Code::kUnsupported: return EPROTO;
    case Code::kBusy: return EBUSY;
    case Code::kTimedOut: return ETIMEDOUT;
    case Code::kQuota: return EDQUOT;
  }
  return EIO;
}

Status Status::FromErrno(int err, std::string_view context) {
  std::string m(context);
  m += ": ";
  m += std::strerror(err);
  switch (err) {
    case ENOENT: return NotFound(std::move(m));
    case ENOSPC:
    case EDQUOT: return NoSpace(std::move(m));
    case EACCES: return PermissionDenied(std::move(m));
    case EPERM: return NotPermitted(std::move(m));
    case EEXIST: return Exists(std::move(m));
    case EROFS: return ReadOnly(std::move(m));
    case EINVAL: return InvalidArgument(std::move(m));
    default: return IOError(std::move(m));
  }
}

Status Status::Context(std::string_view prefix) const {
  if (ok()) return *this;
  std::string m(prefix);
  if (!message_.empty()) m += ": " + message_;
  return Status(code_, std::move(m));
}

}  // namespace hookfs
