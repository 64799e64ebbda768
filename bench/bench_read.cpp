// Read throughput of the training data path: the prefetching window loader reading windows of a corpus (the
// sampler's order, one rank), in MB/s of window data delivered ([B, T, P] float32, what training consumes).
// Writes the windows it read as "shard run start" lines, so that bench/read_h5py.py reads the very same ones.
//   bench_read CORPUS_DIR T GLOBAL_BATCH WINDOWS BUDGET_MB WINDOW_LIST [options]
//     --per-window        each window by its own HDF5 hyperslab read (the loader's earlier path)
//     --pread             chunks read with pread into the chunk cache, not checked and copied in the file's mapping
//                         (sets BFM_NO_MMAP=1)
//     --cache-mb N        chunk cache size (default: the budget less the read-ahead; 0: one batch's chunks)
//     --threads N         reading threads (default 1)
//     --block N           block shuffle: blocks of N time points of starts (default 0: every window shuffled)
//     --shuffle-blocks M  block shuffle: blocks per group (default 32)
//     --stride S --jitter the sampler's stride (default 1) and per-epoch jitter (default off)
//     --compute-ms X      sleep X ms after taking each batch, as a training step would compute (a GPU step: the
//                         host thread waits); the line's wait_s is then the data wait a step of X ms would see
// Prints one line: "loader windows=N bytes=B seconds=S open_s=O wait_s=W depth=D cache_mb=C batches_read=N chunks=K
// chunk_bytes=F hits=H read_s=R copy_s=Y rss_mb=M" (M: the process' peak resident memory). Driven by bench/read.sh.
//   bench_read --checksum-speed   prints "checksum ours_gbs=A hdf5_gbs=B": Fletcher32 over one 256 x 400 float32
//                                 chunk, ours against HDF5's word-by-word loop (what HDF5's filter runs)
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "io/corpus.h"
#include "io/shard_reader.h"
#include "io/window_loader.h"
#include "base/error.h"
#include "runtime/progress.h"
#include "tests/common/fletcher32_reference.h"

namespace {

// HDF5's Fletcher32 loop (H5checksum.c), word after word: what its filter costs per byte.
using bfm::test::fletcher32_by_the_book;

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // KB on Linux
}

int checksum_speed() {
  std::vector<unsigned char> chunk(256 * 400 * 4);
  std::mt19937 rng(1);
  for (auto& b : chunk) b = static_cast<unsigned char>(rng());
  auto gbs = [&](auto&& f) {
    uint32_t sink = 0;
    const int reps = 400;
    bfm::Stopwatch clock;
    for (int r = 0; r < reps; ++r) {
      chunk[static_cast<size_t>(r)] ^= 1;  // not hoisted
      sink += f(chunk.data(), chunk.size());
    }
    const double s = clock.seconds();
    if (sink == 42) std::printf(" ");
    return static_cast<double>(reps) * static_cast<double>(chunk.size()) / s / 1e9;
  };
  const double ours = gbs([](const unsigned char* d, size_t n) { return bfm::io::fletcher32(d, n); });
  const double hdf5 = gbs([](const unsigned char* d, size_t n) { return fletcher32_by_the_book(d, n); });
  std::printf("checksum ours_gbs=%.2f hdf5_gbs=%.2f\n", ours, hdf5);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace bfm;
  if (argc == 2 && std::strcmp(argv[1], "--checksum-speed") == 0) return checksum_speed();
  if (argc < 7) {
    std::fprintf(stderr, "usage: bench_read CORPUS_DIR T GLOBAL_BATCH WINDOWS BUDGET_MB WINDOW_LIST [--per-window] "
                         "[--cache-mb N] [--threads N] [--block N] [--shuffle-blocks M] [--stride S] [--jitter] "
                         "[--compute-ms X]\n"
                         "       bench_read --checksum-speed\n");
    return 2;
  }
  try {
    const std::string dir = argv[1];
    const int64_t T = std::stoll(argv[2]), G = std::stoll(argv[3]), windows = std::stoll(argv[4]);
    const int64_t budget = std::stoll(argv[5]) << 20;
    io::SamplerOptions options{T, 1, false, G, 1};
    options.shuffle_blocks = 32;
    io::LoaderOptions lo{T, budget};
    double compute_ms = 0;
    for (int a = 7; a < argc; ++a) {
      const std::string flag = argv[a];
      auto value = [&] {
        require(a + 1 < argc, "bench_read: ", flag, " needs a value");
        return std::stoll(argv[++a]);
      };
      if (flag == "--per-window") lo.chunk_reads = false;
      else if (flag == "--pread") ::setenv("BFM_NO_MMAP", "1", 1);
      else if (flag == "--cache-mb") lo.cache_bytes = value() << 20;
      else if (flag == "--threads") lo.threads = static_cast<int>(value());
      else if (flag == "--block") options.block = value();
      else if (flag == "--shuffle-blocks") options.shuffle_blocks = value();
      else if (flag == "--stride") options.stride = value();
      else if (flag == "--jitter") options.jitter = true;
      else if (flag == "--compute-ms") compute_ms = static_cast<double>(value());
      else fail("bench_read: unknown option ", flag);
    }
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
    const int64_t batches = (windows + G - 1) / G;

    bfm::Stopwatch clock;  // from opening the shards to the last batch delivered
    io::WindowLoader loader(paths, io::WindowSampler(lengths, options), lo);
    const double open_seconds = clock.seconds();  // the shards opened (their chunk indexes read), nothing read yet
    std::vector<io::Window> read;
    int64_t bytes = 0;
    for (int64_t k = 0; k < batches; ++k) {
      io::WindowBatch b = loader.next();
      bytes += static_cast<int64_t>(b.timeseries.size() * sizeof(float));
      read.insert(read.end(), b.windows.begin(), b.windows.end());
      loader.recycle(std::move(b));
      if (compute_ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(compute_ms));
    }
    const double seconds = clock.seconds();
    const io::LoaderStats st = loader.stats();  // may include batches read ahead beyond the last one taken

    std::ofstream list(argv[6]);
    for (const io::Window& w : read) {
      const auto s = std::upper_bound(first_run.begin(), first_run.end(), w.run) - first_run.begin() - 1;
      list << paths[static_cast<size_t>(s)] << ' ' << w.run - first_run[static_cast<size_t>(s)] << ' ' << w.start
           << '\n';
    }
    std::printf("loader windows=%zu bytes=%lld seconds=%.4f open_s=%.4f wait_s=%.4f depth=%lld cache_mb=%.0f batches_read=%lld "
                "chunks=%lld chunk_bytes=%lld hits=%lld read_s=%.4f copy_s=%.4f rss_mb=%.0f\n",
                read.size(), static_cast<long long>(bytes), seconds, open_seconds, loader.data_wait_seconds(),
                static_cast<long long>(loader.depth()), static_cast<double>(loader.cache_bytes()) / (1 << 20),
                static_cast<long long>(loader.batches_read()), static_cast<long long>(st.chunks_read),
                static_cast<long long>(st.chunk_bytes_read), static_cast<long long>(st.chunk_hits), st.read_seconds,
                st.copy_seconds, peak_rss_mb());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_read: %s\n", e.what());
    return 1;
  }
}
