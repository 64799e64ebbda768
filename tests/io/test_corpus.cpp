// io::Corpus: global run numbering over shards and the summary, checked against what the test wrote (counts, hours,
// traits and TRs computed here by hand).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "io/corpus.h"
#include "io/shard_writer.h"
#include "base/error.h"
#include "tests/io/shard_test_util.h"

namespace bfm::io {
namespace {

// Shard s holds runs_per_shard[s] runs of 10 + r time points, subjects "studyX/sub-<s>" and "studyY/sub-<s>".
void write_corpus(const std::filesystem::path& dir, const std::vector<int>& runs_per_shard) {
  for (size_t s = 0; s < runs_per_shard.size(); ++s) {
    ShardHeader h;
    h.n_parcels = 3;
    h.atlas = "toy";
    h.score_names = {"iq"};
    ShardWriter w((dir / shard_file_name(static_cast<int64_t>(s))).string(), h);
    Subject a;
    a.id = "studyX/sub-" + std::to_string(s);
    a.age = s == 1 ? 30.f : NAN;  // only one subject has an age, none a sex; the score is present for all
    a.scores = {100.f};
    w.add_subject(a);
    for (int r = 0; r < runs_per_shard[s]; ++r) {
      std::vector<float> x(static_cast<size_t>((10 + r) * 3), 0.5f);
      RunView v;
      v.meta.subject = r % 2 ? "studyY/sub-" + std::to_string(s) : a.id;
      v.meta.study = r % 2 ? "studyY" : "studyX";
      v.meta.tr = r % 2 ? 0.8 : 2.0;
      v.meta.length = 10 + r;
      v.timeseries = x.data();
      w.add_run(v);
    }
    w.commit();
  }
}

TEST(Corpus, NumbersRunsAcrossShardsAndSummarises) {
  const auto dir = test::make_temp_dir("corpus");
  const std::vector<int> counts = {2, 3, 1};
  write_corpus(dir, counts);
  const Corpus c(dir.string(), {shard_file_name(0), shard_file_name(1), shard_file_name(2)});
  ASSERT_EQ(c.n_shards(), 3);
  ASSERT_EQ(c.n_runs(), 6);
  int64_t g = 0;
  for (int s = 0; s < 3; ++s)
    for (int r = 0; r < counts[static_cast<size_t>(s)]; ++r, ++g) {
      EXPECT_EQ(c.locate(g), std::make_pair(int64_t{s}, int64_t{r})) << g;
      EXPECT_EQ(c.shard(s).runs()[static_cast<size_t>(r)].length, 10 + r);
    }
  EXPECT_THROW(c.locate(6), Error);
  EXPECT_THROW(c.locate(-1), Error);

  const CorpusSummary s = c.summary();
  EXPECT_EQ(s.runs, 6);
  EXPECT_EQ(s.timepoints, (10 + 11) + (10 + 11 + 12) + 10);
  EXPECT_EQ(s.parcels, 3);
  EXPECT_EQ(s.subjects.size(), 5u);  // studyX/sub-0..2, studyY/sub-0..1
  EXPECT_NEAR(s.hours, ((10 + 10 + 12 + 10) * 2.0 + (11 + 11) * 0.8) / 3600, 1e-12);
  ASSERT_EQ(s.studies.size(), 2u);
  EXPECT_EQ(s.studies.at("studyX").runs, 4);
  EXPECT_EQ(s.studies.at("studyY").runs, 2);
  EXPECT_EQ(s.studies.at("studyY").trs, std::set<double>{0.8});
  EXPECT_EQ(s.traits, (std::vector<std::string>{"age", "iq"}));
  std::filesystem::remove_all(dir);
}

TEST(Corpus, MissingShardNamesTheFile) {
  const auto dir = test::make_temp_dir("corpus-missing");
  write_corpus(dir, {1});
  try {
    Corpus c(dir.string(), {shard_file_name(0), shard_file_name(1)});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shard-00001.h5"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace bfm::io
