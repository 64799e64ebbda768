// The contrastive objective is trained on the pairs the window loader makes and evaluated zero-shot (`clip`) on the
// trials bfm eval finds. The two must ask the same question: a training window that starts at a trial's onset is
// paired with that trial's stimulus. bfm before 2026-12-04 paired a window with the mean embedding over its time
// points (1-4 clips on the quickstart corpus), which this test rejects: the pairing it checks is what eval asks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "io/corpus.h"
#include "io/corpus_manifest.h"
#include "io/synthetic_corpus.h"
#include "io/window_loader.h"
#include "io/window_sampler.h"
#include "launch/eval/data.h"

namespace bfm::launch::eval {
namespace {

namespace fs = std::filesystem;

TEST(EvalPairing, ATrainingWindowAtATrialsOnsetIsPairedWithTheStimulusEvalAsksFor) {
  const fs::path dir = fs::temp_directory_path() / ("bfm_eval_pairing_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  io::SyntheticCorpusConfig c;  // two studies (TR 0.8 s and 1.5 s), the generator's clip schedule
  c.n_subjects = 4;
  c.n_parcels = 8;
  c.minutes = 6;
  c.n_studies = 2;
  c.n_categories = 3;
  c.n_clips = 30;
  c.stim_dim = 4;
  c.seed = 11;
  c.chunk_rows = 64;
  const io::SyntheticCorpus synth(c);
  synth.write_shards(dir.string(), 0, 1, [] {});
  synth.write_manifest(dir.string());

  const int64_t T = 16, S = c.stim_dim;
  // Eval's trials of every task run, and every run's length for the sampler (global run numbering: io::Corpus's).
  EvalData data;
  data.window = T;
  data.stim_dim = S;
  data.subjects.resize(1);
  std::vector<int64_t> lengths, global_of_run;
  {
    io::Corpus corpus(dir.string(), io::read_corpus_manifest(dir.string()).shard_files);
    for (int64_t g = 0; g < corpus.n_runs(); ++g) {
      const auto [s, r] = corpus.locate(g);
      const io::ShardReader& shard = corpus.shard(s);
      const int64_t n = shard.runs()[size_t(r)].length;
      lengths.push_back(n);
      if (shard.runs()[size_t(r)].task == "rest") continue;
      EvalRun run;
      run.global_run = g;
      run.length = n;
      run.stim.resize(size_t(n * S));
      run.label.resize(size_t(n));
      shard.read_stimulus(r, 0, n, run.stim.data());
      shard.read_labels(r, 0, n, run.label.data());
      data.subjects[0].runs.push_back(std::move(run));
      global_of_run.push_back(g);
      add_trials(data, 0, int(data.subjects[0].runs.size()) - 1);
    }
  }  // no HDF5 call of ours while a loader lives
  std::map<std::pair<int64_t, int64_t>, int64_t> stimulus_at_onset;  // (global run, onset) -> index into stimuli
  for (const EvalTrial& t : data.trials) stimulus_at_onset[{global_of_run[size_t(t.run)], t.onset}] = t.stimulus;
  ASSERT_GT(stimulus_at_onset.size(), 50u);

  // Every window (stride 1, no jitter) once, in batches of 8.
  const io::SamplerOptions opt{T, 1, false, 8, 5};
  io::WindowSampler sampler(lengths, opt, 0, 1);
  const int64_t batches = sampler.batches_per_epoch();
  std::vector<std::string> shard_paths;
  for (const auto& f : io::read_corpus_manifest(dir.string()).shard_files) shard_paths.push_back((dir / f).string());
  io::WindowLoader loader(shard_paths, std::move(sampler), io::LoaderOptions{T, 8 << 20});
  int64_t checked = 0;
  for (int64_t k = 0; k < batches; ++k) {
    const io::WindowBatch b = loader.next();
    for (size_t i = 0; i < b.windows.size(); ++i) {
      const auto it = stimulus_at_onset.find({b.windows[i].run, b.windows[i].start});
      if (it == stimulus_at_onset.end()) continue;
      const std::vector<float>& want = data.stimuli[size_t(it->second)];
      for (int64_t j = 0; j < S; ++j)
        ASSERT_EQ(b.stimulus[i * size_t(S) + size_t(j)], want[size_t(j)])
            << "run " << b.windows[i].run << " window at " << b.windows[i].start << ", dimension " << j;
      ++checked;
    }
  }
  EXPECT_GE(checked, int64_t(stimulus_at_onset.size()) * 9 / 10);  // all but a last partial batch's
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bfm::launch::eval
