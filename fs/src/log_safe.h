// LogSafe: a user-chosen string made safe for one log line.
//
// Pack names, hook names, messages, run and tag names, symlink targets are
// chosen by possibly hostile users (DESIGN.md §4). A control character in
// them must never start a new line of the daemon's log (a forged line, or a
// forged sd-daemon `<N>` priority under journald). Every control byte
// (< 0x20, 0x7f) becomes \n, \r, \t or \xNN, and a backslash becomes \\, so
// the escaped text is unambiguous. The daemon's log formatter applies this to
// every message (lifecycle.cc SetupLogging), so no call site can forget it.
#pragma once

#include <string>
#include <string_view>

namespace hookfs::fs {

inline void AppendLogSafe(std::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      case '\\': out->append("\\\\"); break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out->append("\\x");
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 15]);
        } else {
          out->push_back(ch);
        }
    }
  }
}

inline std::string LogSafe(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendLogSafe(s, &out);
  return out;
}

}  // namespace hookfs::fs
