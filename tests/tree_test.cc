#include <gtest/gtest.h>

#include "hookfs/hash.h"
#include "hookfs/tree.h"
#include "test_util.h"

namespace hookfs {
namespace {

using test::Dir;
using test::File;
using test::Link;

// Raw canonical bytes for a one-entry tree, to build invalid ones by hand.
std::string OneEntry(uint8_t type, std::string_view name, std::string_view payload) {
  std::string s("\x01\x00\x00\x00", 4);
  s.push_back(char(type));
  s.push_back(char(name.size()));
  s += name;
  s += payload;
  return s;
}

std::string FilePayload() { return std::string(32, '\x11') + std::string(8, '\0'); }

TEST(Tree, RoundTripsEveryEntryType) {
  ObjectId sub = Sha256::Of("sub");
  Tree t{{File("b.txt", "bee"), File("a.sh", "run", true), Dir("dir", sub), Link("link", "a.sh")}};
  auto enc = EncodeTree(t);
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  auto dec = DecodeTree(*enc);
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  ASSERT_EQ(dec->entries.size(), 4u);
  // Sorted by name on encode.
  EXPECT_EQ(dec->entries[0].name, "a.sh");
  EXPECT_EQ(dec->entries[0].type, EntryType::kExecutable);
  EXPECT_EQ(dec->entries[0].size, 3u);
  EXPECT_EQ(dec->entries[1].name, "b.txt");
  EXPECT_EQ(dec->entries[1].id, Sha256::Of("bee"));
  EXPECT_EQ(dec->entries[2].type, EntryType::kDirectory);
  EXPECT_EQ(dec->entries[2].id, sub);
  EXPECT_EQ(dec->entries[3].target, "a.sh");
  ASSERT_NE(dec->Find("link"), nullptr);
  EXPECT_EQ(dec->Find("nope"), nullptr);
  // Canonical: re-encoding gives the same bytes, so the same id.
  auto again = EncodeTree(*dec);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *enc);
}

TEST(Tree, EmptyTreeIsFourZeroBytes) {
  auto enc = EncodeTree(Tree{});
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(*enc, std::string(4, '\0'));
}

TEST(Tree, EncodeRefusesBadAndDuplicateNames) {
  for (std::string bad : std::vector<std::string>{"", ".", "..", "a/b", std::string("a\0b", 3), std::string(256, 'x')}) {
    auto enc = EncodeTree(Tree{{File(bad, "x")}});
    EXPECT_FALSE(enc.ok()) << "accepted name '" << bad << "'";
  }
  auto dup = EncodeTree(Tree{{File("same", "x"), File("same", "y")}});
  EXPECT_TRUE(dup.status().Is(Code::kMalformed));
  EXPECT_TRUE(EncodeTree(Tree{{File(std::string(255, 'x'), "ok")}}).ok());
}

TEST(Tree, DecodeRefusesNonCanonicalForms) {
  // Each invalid form is refused with a Malformed status.
  std::vector<std::pair<std::string, std::string>> cases = {
      {"dot", OneEntry(1, ".", FilePayload())},
      {"dotdot", OneEntry(1, "..", FilePayload())},
      {"slash", OneEntry(1, "a/b", FilePayload())},
      {"empty name", OneEntry(1, "", FilePayload())},
      {"nul", OneEntry(1, std::string("a\0b", 3), FilePayload())},
      {"unknown type", OneEntry(9, "a", FilePayload())},
      {"truncated", OneEntry(1, "a", FilePayload()).substr(0, 20)},
      {"trailing", OneEntry(1, "a", FilePayload()) + "x"},
      {"empty symlink", OneEntry(3, "l", std::string("\0\0", 2))},
      {"count too large", std::string("\x02\x00\x00\x00", 4) + OneEntry(1, "a", FilePayload()).substr(4)},
  };
  // Unsorted and duplicate entries.
  auto two = [](std::string_view a, std::string_view b) {
    std::string s("\x02\x00\x00\x00", 4);
    for (auto n : {a, b}) {
      s.push_back(1);
      s.push_back(char(n.size()));
      s += n;
      s += FilePayload();
    }
    return s;
  };
  cases.emplace_back("unsorted", two("b", "a"));
  cases.emplace_back("duplicate", two("a", "a"));
  ASSERT_TRUE(DecodeTree(two("a", "b")).ok());
  for (const auto& [what, bytes] : cases) {
    auto dec = DecodeTree(bytes);
    EXPECT_TRUE(dec.status().Is(Code::kMalformed)) << what << ": " << dec.status().ToString();
  }
}

TEST(Names, HookNamesFollowTheContract) {
  for (const char* ok : {"a", "app", "my-hook.v2_x", "0abc"}) EXPECT_TRUE(ValidateHookName(ok).ok()) << ok;
  for (std::string bad : std::vector<std::string>{"", "App", "-x", ".x", "a/b", "a b", std::string(65, 'a'), std::string("a\0", 2)})
    EXPECT_FALSE(ValidateHookName(bad).ok()) << bad;
  EXPECT_TRUE(ValidateHookName(std::string(64, 'a')).ok());
}

}  // namespace
}  // namespace hookfs
