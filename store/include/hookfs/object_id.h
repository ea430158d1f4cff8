// ObjectId: the SHA-256 that names an object. An immutable value type.
//
// A blob's id is exactly `sha256sum` of its content; a tree's id is the
// SHA-256 of its canonical encoding (docs/pack-format.md). Ids are computed
// by the store; a client's declared id is only ever compared with one.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace hookfs {

class ObjectId {
 public:
  static constexpr size_t kSize = 32;
  static constexpr size_t kHexSize = 64;

  ObjectId() { bytes_.fill(0); }
  static ObjectId FromBytes(const void* p) {
    ObjectId id;
    std::memcpy(id.bytes_.data(), p, kSize);
    return id;
  }
  // Exactly 64 lowercase hex digits, as sha256sum prints them.
  static std::optional<ObjectId> FromHex(std::string_view hex);

  const uint8_t* data() const { return bytes_.data(); }
  std::string_view AsKey() const {
    return {reinterpret_cast<const char*>(bytes_.data()), kSize};
  }
  std::string Hex() const;
  std::string ShortHex() const { return Hex().substr(0, 12); }
  bool IsZero() const;

  auto operator<=>(const ObjectId&) const = default;
  bool operator==(const ObjectId&) const = default;

 private:
  std::array<uint8_t, kSize> bytes_;
};

}  // namespace hookfs

template <>
struct std::hash<hookfs::ObjectId> {
  size_t operator()(const hookfs::ObjectId& id) const noexcept {
    size_t h;
    std::memcpy(&h, id.data(), sizeof h);  // already uniformly distributed
    return h;
  }
};
