// --part I/N of bfm synth and bfm convert (io/corpus_manifest.h): the parsing of I/N, its one-line errors, and the
// assignment of shards to parts and ranks (every shard written exactly once; one part is the ranks' old rule).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "io/corpus_manifest.h"
#include "base/error.h"

namespace bfm::io {
namespace {

std::string error_of(const std::string& text) {
  try {
    parse_shard_part(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ShardPart, ParsesIOverN) {
  const ShardPart p = parse_shard_part("2/5");
  EXPECT_EQ(p.index, 2);
  EXPECT_EQ(p.count, 5);
  EXPECT_EQ(p.text(), "2/5");
  EXPECT_FALSE(p.whole());
  EXPECT_TRUE(p.owns(7));
  EXPECT_FALSE(p.owns(8));
  EXPECT_TRUE(parse_shard_part("0/1").whole());
  EXPECT_EQ(parse_shard_part("999999998/999999999").index, 999999998);
}

TEST(ShardPart, BadValuesAreOneLineErrorsNamingThem) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"3/2", "I must be less than N"}, {"2/2", "I must be less than N"}, {"0/0", "N must be at least 1"},
      {"1/0", "N must be at least 1"},  {"", "no '/'"},                    {"3", "no '/'"},
      {"/3", "I is not a whole number"}, {"a/3", "I is not a whole number"}, {"-1/3", "I is not a whole number"},
      {"1/", "N is not a whole number"}, {"1/3/4", "N is not a whole number"}, {"1/ 3", "N is not a whole number"},
      {"1/3.0", "N is not a whole number"}, {"1/99999999999", "N is too large"}};
  for (const auto& [text, why] : cases) {
    const std::string e = error_of(text);
    EXPECT_NE(e.find("--part " + (text.empty() ? std::string("''") : text) + ": " + why), std::string::npos)
        << text << ": " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_NE(e.find("expected I/N"), std::string::npos) << e;
  }
}

TEST(ShardPart, EveryShardOnceOverPartsAndRanks) {
  for (int64_t n_shards : {0, 1, 5, 17, 64})
    for (int64_t parts : {1, 2, 3, 7, 100})
      for (int ranks : {1, 2, 3, 4}) {
        std::multiset<int64_t> seen;
        for (int64_t i = 0; i < parts; ++i)
          for (int r = 0; r < ranks; ++r) {
            const ShardPart part{i, parts};
            const std::vector<int64_t> mine = shards_for(n_shards, part, r, ranks);
            for (size_t k = 0; k < mine.size(); ++k) {
              EXPECT_TRUE(part.owns(mine[k]));
              EXPECT_EQ((mine[k] / parts) % ranks, r);  // the k-th shard of a part goes to rank k % ranks
              if (k) {
                EXPECT_LT(mine[k - 1], mine[k]);
              }
              seen.insert(mine[k]);
            }
          }
        ASSERT_EQ(static_cast<int64_t>(seen.size()), n_shards) << n_shards << " " << parts << " " << ranks;
        for (int64_t j = 0; j < n_shards; ++j) EXPECT_EQ(seen.count(j), 1u);
      }
}

TEST(ShardPart, OnePartIsShardJToRankJModRanks) {
  for (int r = 0; r < 3; ++r) {
    std::vector<int64_t> want;
    for (int64_t j = r; j < 10; j += 3) want.push_back(j);
    EXPECT_EQ(shards_for(10, ShardPart{}, r, 3), want);
  }
  // Part 1 of 3 over 2 ranks: the part's shards 1, 4, 7, 10 go to ranks 0, 1, 0, 1.
  EXPECT_EQ(shards_for(12, ShardPart{1, 3}, 0, 2), (std::vector<int64_t>{1, 7}));
  EXPECT_EQ(shards_for(12, ShardPart{1, 3}, 1, 2), (std::vector<int64_t>{4, 10}));
  EXPECT_THROW(shards_for(12, ShardPart{3, 3}, 0, 1), Error);
  EXPECT_THROW(shards_for(12, ShardPart{0, 3}, 2, 2), Error);
}

TEST(ShardPart, ShardListNamesTheMissing) {
  EXPECT_EQ(shard_list({1, 3}, 4), "shard-00001.h5, shard-00003.h5 (2 of 4 shards)");
  EXPECT_EQ(shard_list({0, 1, 2, 3}, 9, 2), "shard-00000.h5, shard-00001.h5 and 2 more (4 of 9 shards)");
}

}  // namespace
}  // namespace bfm::io
