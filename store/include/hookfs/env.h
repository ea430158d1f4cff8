// Env: the store's file I/O on staging files (spools, chunk-session locks),
// one virtual call per system call, so that tests can inject faults and
// interleavings (a crash, ENOSPC, another process's sweep between two calls)
// in the style of leveldb's Env/EnvWrapper. Every call returns what the
// system call returns and leaves errno as it set it.
//
// Contract: Env::Default() forwards to the kernel and is what production
// uses; an EnvWrapper forwards to a target Env and a test overrides only the
// calls it perturbs. An Env must outlive every Store that uses it.
#pragma once

#include <sys/types.h>

namespace hookfs {

class Env {
 public:
  virtual ~Env() = default;
  static Env* Default();

  virtual int Open(const char* path, int flags, mode_t mode);
  virtual int Flock(int fd, int op);
  virtual int Linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags);
  virtual int Rename(const char* from, const char* to);
  virtual int Unlink(const char* path);
  virtual ssize_t Write(int fd, const void* buf, size_t n);
  virtual int Fsync(int fd);
};

class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  int Open(const char* path, int flags, mode_t mode) override { return target_->Open(path, flags, mode); }
  int Flock(int fd, int op) override { return target_->Flock(fd, op); }
  int Linkat(int a, const char* b, int c, const char* d, int e) override { return target_->Linkat(a, b, c, d, e); }
  int Rename(const char* from, const char* to) override { return target_->Rename(from, to); }
  int Unlink(const char* path) override { return target_->Unlink(path); }
  ssize_t Write(int fd, const void* buf, size_t n) override { return target_->Write(fd, buf, n); }
  int Fsync(int fd) override { return target_->Fsync(fd); }

 private:
  Env* target_;
};

}  // namespace hookfs
