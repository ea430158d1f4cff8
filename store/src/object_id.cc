#include "hookfs/object_id.h"

namespace hookfs {

namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is not canonical: one id, one spelling
}
}  // namespace

std::optional<ObjectId> ObjectId::FromHex(std::string_view hex) {
  if (hex.size() != kHexSize) return std::nullopt;
  ObjectId id;
  for (size_t i = 0; i < kSize; ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    id.bytes_[i] = uint8_t(hi << 4 | lo);
  }
  return id;
}

std::string ObjectId::Hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(kHexSize, '0');
  for (size_t i = 0; i < kSize; ++i) {
    s[2 * i] = kDigits[bytes_[i] >> 4];
    s[2 * i + 1] = kDigits[bytes_[i] & 15];
  }
  return s;
}

bool ObjectId::IsZero() const {
  for (uint8_t b : bytes_)
    if (b) return false;
  return true;
}

}  // namespace hookfs
