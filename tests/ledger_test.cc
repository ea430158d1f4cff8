#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hookfs/apply.h"
#include "hookfs/ledger.h"
#include "test_util.h"

namespace hookfs {
namespace {

using test::File;
using test::PackSpec;
using test::TempDir;

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = test::OpenStore(dir_ / "store");
    ASSERT_NE(store_, nullptr);
    ledger_ = std::make_unique<Ledger>(store_.get());
    // Releases 1, 2, 3 of "app"; live at 3.
    for (const char* content : {"one", "two", "three"}) {
      PackSpec s;
      s.hooks.push_back({"app", ""});
      s.Blob(content);
      s.Release("app", s.AddTree({File("f", content)}));
      test::WriteFile(dir_ / "p.pack", s.Bytes());
      ASSERT_TRUE(ApplyPackFile(ledger_.get(), dir_ / "p.pack", {}).Verdict().ok());
    }
  }
  uint32_t Live() {
    auto l = ledger_->GetLive("app");
    EXPECT_TRUE(l.ok());
    return l.ok() ? l->value_or(0) : 0;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Ledger> ledger_;
  Actor alice_{1001, "alice"};
};

TEST_F(LedgerTest, ListsHooks) {
  auto hooks = ledger_->ListHooks();
  ASSERT_TRUE(hooks.ok()) << hooks.status().ToString();
  ASSERT_EQ(hooks->size(), 1u);
  EXPECT_EQ((*hooks)[0].name, "app");
}

TEST_F(LedgerTest, RollbackMovesLiveAndRecordsWhoAndWhen) {
  ASSERT_EQ(Live(), 3u);
  ASSERT_TRUE(ledger_->MoveLive("app", 1, alice_).ok());
  EXPECT_EQ(Live(), 1u);
  ASSERT_TRUE(ledger_->MoveLive("app", 2, alice_).ok());
  EXPECT_EQ(Live(), 2u);
  auto hist = ledger_->History("app");
  ASSERT_TRUE(hist.ok());
  ASSERT_EQ(hist->size(), 5u);  // 3 publishes, 2 moves
  const PointerMove& back = (*hist)[3];
  EXPECT_EQ(back.pointer, "live");
  EXPECT_EQ(back.from, 3u);
  EXPECT_EQ(back.to, 1u);
  EXPECT_EQ(back.uid, 1001u);
  EXPECT_GT(back.time, 1700000000);
  EXPECT_EQ((*hist)[4].from, 1u);
  EXPECT_EQ((*hist)[4].to, 2u);
}

TEST_F(LedgerTest, MovesToMissingReleasesFailAndChangeNothing) {
  auto before = test::Count(*store_);
  Status st = ledger_->MoveLive("app", 4, alice_);
  EXPECT_TRUE(st.Is(Code::kInvalidArgument)) << st.ToString();
  EXPECT_EQ(st.ToErrno(), EINVAL);
  EXPECT_TRUE(ledger_->MoveLive("app", 0, alice_).Is(Code::kInvalidArgument));
  EXPECT_TRUE(ledger_->SetTag("app", "stable", 9, alice_).Is(Code::kInvalidArgument));
  EXPECT_TRUE(ledger_->MoveLive("nohook", 1, alice_).Is(Code::kNotFound));
  EXPECT_TRUE(ledger_->SetTag("app", "Bad Tag", 1, alice_).Is(Code::kInvalidArgument));
  EXPECT_EQ(Live(), 3u);
  EXPECT_EQ(test::Count(*store_), before);
}

TEST_F(LedgerTest, MovingLiveWhereItIsIsNotAMove) {
  auto before = test::Count(*store_);
  ASSERT_TRUE(ledger_->MoveLive("app", 3, alice_).ok());
  EXPECT_EQ(test::Count(*store_), before);
}

TEST_F(LedgerTest, TagsAreCreatedMovedAndRemoved) {
  ASSERT_TRUE(ledger_->SetTag("app", "stable", 1, alice_).ok());
  ASSERT_TRUE(ledger_->SetTag("app", "canary", 3, alice_).ok());
  auto tags = ledger_->ListTags("app");
  ASSERT_TRUE(tags.ok());
  EXPECT_EQ(*tags, (std::map<std::string, uint32_t>{{"canary", 3}, {"stable", 1}}));
  ASSERT_TRUE(ledger_->SetTag("app", "stable", 2, alice_).ok());
  ASSERT_TRUE(ledger_->RemoveTag("app", "canary", alice_).ok());
  tags = ledger_->ListTags("app");
  EXPECT_EQ(*tags, (std::map<std::string, uint32_t>{{"stable", 2}}));
  EXPECT_TRUE(ledger_->RemoveTag("app", "canary", alice_).Is(Code::kNotFound));
  auto hist = ledger_->History("app");
  ASSERT_EQ(hist->size(), 7u);
  EXPECT_EQ(hist->back().pointer, "tags/canary");
  EXPECT_EQ(hist->back().from, 3u);
  EXPECT_EQ(hist->back().to, 0u);
  EXPECT_EQ(Live(), 3u) << "tags never move live";
}

TEST_F(LedgerTest, RunsArePinnedAtStartAndSealedAtFinish) {
  auto run = ledger_->StartRun("app", "r1", alice_);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->version, 3u);
  EXPECT_EQ(run->status, "running");
  ASSERT_TRUE(ledger_->MoveLive("app", 1, alice_).ok());
  auto pinned = ledger_->GetRun("app", "r1");
  ASSERT_TRUE(pinned.ok());
  EXPECT_EQ(pinned->version, 3u) << "a live move changed what a running run sees";
  EXPECT_EQ(pinned->digest, ledger_->GetRelease("app", 3)->digest);
  auto r2 = ledger_->StartRun("app", "r2", alice_);
  EXPECT_EQ(r2->version, 1u);

  auto result = RunResult::FromJson(R"({"status":"succeeded","exit_code":0,"oom_retries":1})");
  ASSERT_TRUE(result.ok());
  auto done = ledger_->FinishRun("app", "r1", *result, alice_);
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(done->status, "succeeded");
  EXPECT_EQ(done->oom_retries, 1);
  EXPECT_GE(done->duration_s, 0.0);
  EXPECT_TRUE(done->sealed());
  auto j = ToJson(*done);
  EXPECT_EQ(j["version"], 3);
  EXPECT_EQ(j["status"], "succeeded");

  // Sealed: a second finish fails and changes nothing.
  auto again = ledger_->FinishRun("app", "r1", *RunResult::FromJson(R"({"status":"failed","exit_code":1})"), alice_);
  EXPECT_TRUE(again.status().Is(Code::kNotPermitted)) << again.status().ToString();
  EXPECT_EQ(ledger_->GetRun("app", "r1")->status, "succeeded");
  auto runs = ledger_->ListRuns("app");
  EXPECT_EQ(runs->size(), 2u);
}

TEST_F(LedgerTest, RunStartRefusals) {
  EXPECT_TRUE(ledger_->StartRun("app", "ok", alice_).ok());
  EXPECT_TRUE(ledger_->StartRun("app", "ok", alice_).status().Is(Code::kExists));
  for (std::string bad : std::vector<std::string>{"", "a/b", "sp ace", std::string(65, 'r'), "..", "."})
    EXPECT_TRUE(ledger_->StartRun("app", bad, alice_).status().Is(Code::kInvalidArgument)) << bad;
  EXPECT_TRUE(ledger_->StartRun("nohook", "r", alice_).status().Is(Code::kNotFound));
  // A hook without a live release cannot run.
  PackSpec s;
  s.hooks.push_back({"dark", ""});
  s.Blob("d");
  s.Release("dark", s.AddTree({File("f", "d")}), /*no_advance=*/true);
  test::WriteFile(dir_ / "d.pack", s.Bytes());
  ASSERT_TRUE(ApplyPackFile(ledger_.get(), dir_ / "d.pack", {}).Verdict().ok());
  auto r = ledger_->StartRun("dark", "r", alice_);
  EXPECT_TRUE(r.status().Is(Code::kNotFound)) << r.status().ToString();
  EXPECT_EQ(r.status().ToErrno(), ENOENT);
}

TEST_F(LedgerTest, RunResultsAreValidated) {
  EXPECT_FALSE(RunResult::FromJson("not json").ok());
  EXPECT_FALSE(RunResult::FromJson("[]").ok());
  EXPECT_FALSE(RunResult::FromJson(R"({"exit_code":0})").ok());
  EXPECT_FALSE(RunResult::FromJson(R"({"status":"exploded"})").ok());
  EXPECT_FALSE(RunResult::FromJson(R"({"status":"failed","exit_code":"one"})").ok());
  EXPECT_FALSE(RunResult::FromJson(R"({"status":"failed","oom_retries":-1})").ok());
  auto r = RunResult::FromJson(R"({"status":"timed_out","note":"took too long"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->note, "took too long");
}

TEST_F(LedgerTest, JournalRecordsEveryEventInOrder) {
  ASSERT_TRUE(ledger_->MoveLive("app", 1, alice_).ok());
  ASSERT_TRUE(ledger_->StartRun("app", "r", alice_).ok());
  std::vector<std::string> events;
  uint64_t last = 0;
  ASSERT_TRUE(ledger_->ReadJournal(1, [&](uint64_t seq, std::string_view line) {
                EXPECT_EQ(seq, last + 1);
                last = seq;
                auto j = nlohmann::json::parse(line);
                EXPECT_EQ(j["seq"], seq);
                events.push_back(j["event"]);
                return true;
              }).ok());
  std::vector<std::string> want = {"hook", "release", "pointer", "pack", "release", "pointer", "pack",
                                   "release", "pointer", "pack", "pointer", "run_start"};
  EXPECT_EQ(events, want);
}

}  // namespace
}  // namespace hookfs
