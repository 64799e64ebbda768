// bfm synth end to end: the program makes a small corpus (60 subjects, 32 parcels, 2 minutes, 3 studies), and h5py
// and numpy (tests/io/synthetic_corpus_checks.py, an independent reader) check what it holds: runs z-scored per
// parcel, each study's TR, stimuli and labels only in task runs and matching the ground truth's clips, splits with
// no subject in two, the ground truth's shapes and coupling model, the generative model (maps, sites, coupling)
// recomputed from the ground truth fitting the data, the diagnosis decodable from the time series in the direction
// of its known effect, and the same bytes whether 1 or 2 MPI ranks made it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "shard_test_util.h"

namespace {

namespace fs = std::filesystem;
using bfm::test::make_temp_dir;
using bfm::test::run_python;

const std::string kShape = " --subjects 60 --parcels 32 --minutes 2 --studies 3 --subjects-per-shard 16";
const std::string kArgs = kShape + " --seed 5";

// Runs a shell command; returns its exit code, its output (stdout and stderr) in `output`.
int run_shell(const fs::path& dir, const std::string& command, std::string& output) {
  const std::string log = (dir / "command.log").string();
  const int rc = std::system((command + " > " + log + " 2>&1").c_str());
  const auto text = bfm::test::read_raw<char>(log);
  output.assign(text.begin(), text.end());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class SyntheticCorpusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // What BFM_TEST_ENV sets for mpirun in a container (gtest_discover_tests passes only its first entry through).
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    ::setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
    dir_ = make_temp_dir("synth");
    std::string out;
    ASSERT_EQ(run_shell(dir_, std::string(BFM_EXE) + " synth" + kArgs + " --out " + (dir_ / "one").string(), out), 0)
        << out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static void expect_check(const std::string& check, const std::string& extra = "") {
    std::string out;
    EXPECT_EQ(run_python(dir_, "exec(open('" BFM_SYNTH_CHECKS "').read())",
                         check + " " + (dir_ / "one").string() + " " + extra, out), 0)
        << check << ":\n" << out;
  }

  static fs::path dir_;
};
fs::path SyntheticCorpusTest::dir_;

TEST_F(SyntheticCorpusTest, RunsAreZScoredPerParcel) { expect_check("zscore"); }

TEST_F(SyntheticCorpusTest, StudiesHaveTheirTrsAndOnlyTaskRunsHaveStimuli) { expect_check("studies"); }

TEST_F(SyntheticCorpusTest, ManifestSplitsAreDisjointAndCoverTheSubjects) { expect_check("splits"); }

TEST_F(SyntheticCorpusTest, GroundTruthHasItsShapesAndTheCouplingModel) { expect_check("ground_truth"); }

TEST_F(SyntheticCorpusTest, DiagnosisIsDecodableInTheDirectionOfItsEffect) { expect_check("diagnosis"); }

// The generative model recomputed from the ground truth alone fits the data, and fits it better with what the
// ground truth stores for the subject (its own maps, its site's gain, noise and coil profile, its coupling) than
// with the group maps, another site or another subject's coupling. Longer runs than the suite's corpus (10 minutes,
// 64 parcels), so that correlations are measured well enough; three sites per study.
TEST_F(SyntheticCorpusTest, GroundTruthMapsSitesAndCouplingReproduceTheData) {
  std::string out;
  const fs::path corpus = dir_ / "model";
  ASSERT_EQ(run_shell(dir_, std::string(BFM_EXE) + " synth --subjects 24 --parcels 64 --minutes 10 --sites 3 --seed 3"
                                " --out " + corpus.string(), out), 0) << out;
  EXPECT_EQ(run_python(dir_, "exec(open('" BFM_SYNTH_CHECKS "').read())", "model " + corpus.string() + " 3", out), 0)
      << out;
  // bfm inspect lists each study's sites.
  ASSERT_EQ(run_shell(dir_, std::string(BFM_EXE) + " inspect --json " + corpus.string(), out), 0) << out;
  const std::string code =
      "import json, sys\nj = json.loads(open(sys.argv[1]).read())\n"
      "assert j['per_study']['study02']['sites'] == ['site04', 'site05', 'site06'], j['per_study']\nprint('ok')\n";
  {
    std::ofstream(dir_ / "inspect.json") << out;
  }
  EXPECT_EQ(run_python(dir_, code, (dir_ / "inspect.json").string(), out), 0) << out;
}

// --chunk-rows: h5py finds chunks of 40 rows in every row dataset, the values are the default corpus' (same seed and
// options), and bfm inspect --verify reads every chunk of it (its checksums through bfm's own reader).
TEST_F(SyntheticCorpusTest, ChunkRowsOptionChunksTheRowsAndKeepsTheValues) {
  std::string out;
  const fs::path corpus = dir_ / "chunk40";
  ASSERT_EQ(run_shell(dir_, std::string(BFM_EXE) + " synth" + kArgs + " --chunk-rows 40 --out " + corpus.string(), out),
            0) << out;
  EXPECT_EQ(run_python(dir_, "exec(open('" BFM_SYNTH_CHECKS "').read())",
                       "chunks " + corpus.string() + " " + (dir_ / "one").string() + " 40", out), 0) << out;
  EXPECT_EQ(run_shell(dir_, std::string(BFM_EXE) + " inspect --verify " + corpus.string(), out), 0) << out;
  EXPECT_NE(run_shell(dir_, std::string(BFM_EXE) + " synth --subjects 2 --chunk-rows 0 --out " +
                                (dir_ / "y").string(), out), 0);
  EXPECT_NE(out.find("--chunk-rows"), std::string::npos) << out;
}

TEST_F(SyntheticCorpusTest, SameCorpusOnTwoRanks) {
#ifndef BFM_MPIEXEC
  GTEST_SKIP() << "built without MPI";
#else
  std::string out;
  const std::string two = (dir_ / "two").string();
  ASSERT_EQ(run_shell(dir_, std::string(BFM_MPIEXEC) + " -np 2 --oversubscribe " BFM_EXE " synth" + kArgs +
                                " --out " + two, out), 0)
      << out;
  expect_check("same", two);
  // The check itself tells corpora apart: another seed is not the same corpus.
  const std::string other = (dir_ / "other-seed").string();
  ASSERT_EQ(run_shell(dir_, std::string(BFM_EXE) + " synth" + kShape + " --seed 6 --out " + other, out), 0) << out;
  ASSERT_NE(run_python(dir_, "exec(open('" BFM_SYNTH_CHECKS "').read())",
                       "same " + (dir_ / "one").string() + " " + other, out), 0);
#endif
}

TEST_F(SyntheticCorpusTest, Float16StorageIsFloat16AndStillZScored) {
  std::string out;
  const std::string half = (dir_ / "half").string();
  ASSERT_EQ(run_shell(dir_, std::string(BFM_EXE) + " synth --subjects 6 --parcels 16 --minutes 1 --float16 --out " +
                                half, out), 0)
      << out;
  for (const std::string check : {"float16", "zscore"}) {
    ASSERT_EQ(run_python(dir_, "exec(open('" BFM_SYNTH_CHECKS "').read())", check + " " + half, out), 0) << out;
  }
}

TEST_F(SyntheticCorpusTest, RefusesANonEmptyFolderAndBadNumbers) {
  std::string out;
  const std::string one = (dir_ / "one").string();
  EXPECT_NE(run_shell(dir_, std::string(BFM_EXE) + " synth --subjects 2 --out " + one, out), 0);
  EXPECT_NE(out.find("not empty"), std::string::npos) << out;
  EXPECT_NE(run_shell(dir_, std::string(BFM_EXE) + " synth --subjects 0 --out " + (dir_ / "x").string(), out), 0);
  EXPECT_NE(out.find("--subjects"), std::string::npos) << out;
  EXPECT_NE(run_shell(dir_, std::string(BFM_EXE) + " synth --subjects 2 --parcels abc --out " +
                                (dir_ / "x").string(), out), 0);
  EXPECT_NE(out.find("--parcels"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_ / "x" / "manifest.json"));
  // --overwrite replaces the corpus: fewer subjects now.
  const std::string copy = (dir_ / "copy").string();
  ASSERT_EQ(run_shell(dir_, std::string(BFM_EXE) + " synth --subjects 5 --parcels 16 --minutes 1 --out " + copy, out),
            0) << out;
  ASSERT_EQ(run_shell(dir_, std::string(BFM_EXE) + " synth --subjects 3 --parcels 16 --minutes 1 --overwrite --out " +
                                copy, out), 0) << out;
  ASSERT_EQ(run_python(dir_, "import json,sys; assert json.load(open(sys.argv[1]))['n_subjects'] == 3",
                       copy + "/manifest.json", out), 0) << out;
}

}  // namespace
