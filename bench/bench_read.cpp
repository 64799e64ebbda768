// Read throughput of the training data path: the prefetching window loader reading random windows of a corpus
// (the sampler's order, one rank), in MB/s of window data delivered ([B, T, P] float32, what training consumes).
// Writes the windows it read as "shard run start" lines, so that bench/read_h5py.py reads the very same ones.
//   bench_read CORPUS_DIR T GLOBAL_BATCH WINDOWS BUDGET_MB WINDOW_LIST
// Prints one line: "loader windows=N bytes=B seconds=S wait_s=W depth=D". Driven by bench/read.sh.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/corpus.h"
#include "io/window_loader.h"
#include "runtime/error.h"
#include "runtime/progress.h"

int main(int argc, char** argv) {
  using namespace bfm;
  if (argc != 7) {
    std::fprintf(stderr, "usage: bench_read CORPUS_DIR T GLOBAL_BATCH WINDOWS BUDGET_MB WINDOW_LIST\n");
    return 2;
  }
  try {
    const std::string dir = argv[1];
    const int64_t T = std::stoll(argv[2]), G = std::stoll(argv[3]), windows = std::stoll(argv[4]);
    const int64_t budget = std::stoll(argv[5]) << 20;
    std::vector<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("shard-", 0) == 0 && e.path().extension() == ".h5") files.push_back(name);
    }
    std::sort(files.begin(), files.end());
    require(!files.empty(), dir, ": no shard-*.h5 files");

    std::vector<int64_t> lengths, first_run = {0};  // run lengths in corpus order; first global run of each shard
    std::vector<std::string> paths;
    {
      io::Corpus corpus(dir, files);  // closed before the loader's thread makes its HDF5 calls
      for (int64_t s = 0; s < corpus.n_shards(); ++s) {
        paths.push_back(corpus.shard(s).path());
        for (const auto& r : corpus.shard(s).runs()) lengths.push_back(r.length);
        first_run.push_back(static_cast<int64_t>(lengths.size()));
      }
    }
    const io::SamplerOptions options{T, 1, false, G, 1};
    const int64_t batches = (windows + G - 1) / G;

    runtime::Stopwatch clock;  // from opening the shards to the last batch delivered
    io::WindowLoader loader(paths, io::WindowSampler(lengths, options), io::LoaderOptions{T, budget});
    std::vector<io::Window> read;
    int64_t bytes = 0;
    for (int64_t k = 0; k < batches; ++k) {
      io::WindowBatch b = loader.next();
      bytes += static_cast<int64_t>(b.timeseries.size() * sizeof(float));
      read.insert(read.end(), b.windows.begin(), b.windows.end());
      loader.recycle(std::move(b));
    }
    const double seconds = clock.seconds();

    std::ofstream list(argv[6]);
    for (const io::Window& w : read) {
      const auto s = std::upper_bound(first_run.begin(), first_run.end(), w.run) - first_run.begin() - 1;
      list << paths[static_cast<size_t>(s)] << ' ' << w.run - first_run[static_cast<size_t>(s)] << ' ' << w.start
           << '\n';
    }
    std::printf("loader windows=%zu bytes=%lld seconds=%.4f wait_s=%.4f depth=%lld\n", read.size(),
                static_cast<long long>(bytes), seconds, loader.data_wait_seconds(),
                static_cast<long long>(loader.depth()));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_read: %s\n", e.what());
    return 1;
  }
}
