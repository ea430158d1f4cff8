#include "hookfs/env.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>

namespace hookfs {

Env* Env::Default() {
  static Env env;
  return &env;
}

int Env::Open(const char* path, int flags, mode_t mode) { return ::open(path, flags, mode); }
int Env::Flock(int fd, int op) { return ::flock(fd, op); }
int Env::Linkat(int a, const char* b, int c, const char* d, int e) { return ::linkat(a, b, c, d, e); }
int Env::Rename(const char* from, const char* to) { return ::rename(from, to); }
int Env::Unlink(const char* path) { return ::unlink(path); }
ssize_t Env::Write(int fd, const void* buf, size_t n) { return ::write(fd, buf, n); }
int Env::Fsync(int fd) { return ::fsync(fd); }

}  // namespace hookfs
