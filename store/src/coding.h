// Little-endian encoding helpers for the pack and tree formats (internal).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace hookfs::coding {

inline void PutU8(std::string* s, uint8_t v) { s->push_back(char(v)); }
inline void PutLE16(std::string* s, uint16_t v) {
  char b[2] = {char(v), char(v >> 8)};
  s->append(b, 2);
}
inline void PutLE32(std::string* s, uint32_t v) {
  char b[4] = {char(v), char(v >> 8), char(v >> 16), char(v >> 24)};
  s->append(b, 4);
}
inline void PutLE64(std::string* s, uint64_t v) {
  PutLE32(s, uint32_t(v));
  PutLE32(s, uint32_t(v >> 32));
}
inline uint32_t LE32(const void* p) {
  auto u = static_cast<const unsigned char*>(p);
  return uint32_t(u[0]) | uint32_t(u[1]) << 8 | uint32_t(u[2]) << 16 | uint32_t(u[3]) << 24;
}
inline uint64_t LE64(const void* p) {
  return uint64_t(LE32(p)) | uint64_t(LE32(static_cast<const char*>(p) + 4)) << 32;
}

// Bounds-checked reader over a byte string. Any short read sets failed().
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool U8(uint8_t* v) {
    if (!Need(1)) return false;
    *v = uint8_t(s_[pos_++]);
    return true;
  }
  bool LE16(uint16_t* v) {
    if (!Need(2)) return false;
    auto u = reinterpret_cast<const unsigned char*>(s_.data() + pos_);
    *v = uint16_t(u[0] | u[1] << 8);
    pos_ += 2;
    return true;
  }
  bool LE32v(uint32_t* v) {
    if (!Need(4)) return false;
    *v = LE32(s_.data() + pos_);
    pos_ += 4;
    return true;
  }
  bool LE64v(uint64_t* v) {
    if (!Need(8)) return false;
    *v = LE64(s_.data() + pos_);
    pos_ += 8;
    return true;
  }
  bool Bytes(size_t n, std::string_view* out) {
    if (!Need(n)) return false;
    *out = s_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == s_.size(); }
  size_t pos() const { return pos_; }

 private:
  bool Need(size_t n) { return s_.size() - pos_ >= n; }
  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace hookfs::coding
