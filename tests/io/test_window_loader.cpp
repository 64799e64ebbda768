// io::WindowLoader against independent paths: every batch equals the sampler's windows read one by one with
// ShardReader and the closed-form values the test wrote (x = 1000 run + t + p / 8); the memory budget bounds how far
// the thread reads ahead; state() follows the batches taken, not the prefetched ones; a corrupted chunk (located with
// h5py) surfaces from next() naming the file; the destructor returns with a full queue.
// Chunk reads (the default) against the per-window HDF5 reads (LoaderOptions::chunk_reads = false) on shards of every
// layout the reader accepts (ours in float32 and float16, h5py's compressed, unfiltered with other chunk rows,
// big-endian, contiguous), with 1 and 3 reading threads and both sampling modes; our Fletcher32 against a plain port
// of HDF5's loop; the cache reads a chunk once while it holds it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "io/corpus.h"
#include "io/shard_writer.h"
#include "io/window_loader.h"
#include "base/error.h"
#include "tests/common/fletcher32_reference.h"
#include "tests/io/shard_test_util.h"

namespace bfm::io {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t P = 5, S = 3;

// g: the run's global number (shard 0's runs first).
float value(int64_t g, int64_t t, int64_t p) {
  return static_cast<float>(1000 * g + t) + 0.125f * static_cast<float>(p);
}
int32_t label_value(int64_t g, int64_t t) { return t % 7 < 3 ? -1 : static_cast<int32_t>((g + t / 7) % 4); }
// 0 where no stimulus is shown (label -1: gaps of 3 time points every 7), as the corpus format stores it; never 0
// elsewhere (k = 0 row: g + 0.25 (t % 8) + 1 > 0).
float stim_value(int64_t g, int64_t t, int64_t k) {
  if (label_value(g, t) < 0) return 0.0f;
  return static_cast<float>(g) + 0.25f * static_cast<float>(t % 8) + 1.0f - static_cast<float>(k);
}

// Shard 0: runs of 40 and 23 time points with stimulus embeddings and labels; shard 1: runs of 31, 50, 12 (or
// `long_run` time points for its second run) without them.
std::vector<int64_t> write_corpus(const fs::path& dir, int64_t long_run = 50) {
  const std::vector<std::vector<int64_t>> lengths = {{40, 23}, {31, long_run, 12}};
  std::vector<int64_t> all;
  int64_t g = 0;
  for (size_t s = 0; s < lengths.size(); ++s) {
    ShardHeader h;
    h.n_parcels = P;
    h.atlas = "toy";
    h.stimulus_dim = s == 0 ? S : 0;
    h.labels = s == 0;
    ShardWriter w((dir / shard_file_name(static_cast<int64_t>(s))).string(), h);
    for (int64_t n : lengths[s]) {
      std::vector<float> x(static_cast<size_t>(n * P)), e(static_cast<size_t>(n * S));
      std::vector<int32_t> l(static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t p = 0; p < P; ++p) x[static_cast<size_t>(t * P + p)] = value(g, t, p);
        for (int64_t k = 0; k < S; ++k) e[static_cast<size_t>(t * S + k)] = stim_value(g, t, k);
        l[static_cast<size_t>(t)] = label_value(g, t);
      }
      RunView v;
      v.meta.subject = "studyX/sub-" + std::to_string(g);
      v.meta.tr = 2.0;
      v.meta.length = n;
      v.timeseries = x.data();
      if (s == 0) {
        v.stim_embedding = e.data();
        v.labels = l.data();
      }
      w.add_run(v);
      all.push_back(n);
      ++g;
    }
    w.commit();
  }
  return all;
}

class WindowLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name()); }
  void TearDown() override { fs::remove_all(dir_); }
  std::vector<std::string> paths() const {
    return {(dir_ / shard_file_name(0)).string(), (dir_ / shard_file_name(1)).string()};
  }
  // Waits (at most 10 s) until the loader's thread has read `n` batches.
  static bool wait_read(const WindowLoader& loader, int64_t n) {
    for (int i = 0; i < 1000 && loader.batches_read() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return loader.batches_read() == n;
  }
  fs::path dir_;
};

TEST_F(WindowLoaderTest, BatchesEqualTheSamplersWindowsReadWithShardReaderAndTheFormula) {
  const auto lengths = write_corpus(dir_);
  const int64_t T = 8;
  const SamplerOptions opt{T, 1, false, 4, 3};
  WindowSampler reference(lengths, opt, 1, 2);  // rank 1 of 2: local batch 2
  Corpus corpus(dir_.string(), {shard_file_name(0), shard_file_name(1)});
  const int64_t batches = reference.batches_per_epoch() + 5;  // into the second epoch
  std::vector<std::vector<Window>> want_windows;
  std::vector<std::vector<float>> want_rows;  // read here, before the loader's thread exists (one HDF5 user at a time)
  for (int64_t k = 0; k < batches; ++k) {
    want_windows.push_back(reference.next_batch());
    std::vector<float> rows;
    for (const Window& w : want_windows.back()) {
      const auto [s, r] = corpus.locate(w.run);
      const auto x = corpus.shard(s).read_window(r, w.start, T);
      rows.insert(rows.end(), x.begin(), x.end());
    }
    want_rows.push_back(rows);
  }
  WindowLoader loader(corpus, WindowSampler(lengths, opt, 1, 2), LoaderOptions{T, 1 << 20});
  EXPECT_EQ(loader.batch_size(), 2);
  EXPECT_EQ(loader.n_parcels(), P);
  EXPECT_EQ(loader.stimulus_dim(), S);
  EXPECT_TRUE(loader.labels());
  std::map<int64_t, int> pairing;  // paired offset (-1: none, -2: a shard without stimuli) -> windows
  for (int64_t k = 0; k < batches; ++k) {
    WindowBatch b = loader.next();
    ASSERT_EQ(b.windows, want_windows[static_cast<size_t>(k)]) << "batch " << k;
    ASSERT_EQ(b.timeseries.size(), static_cast<size_t>(2 * T * P));
    ASSERT_EQ(b.timeseries, want_rows[static_cast<size_t>(k)]) << "batch " << k;
    for (size_t i = 0; i < b.windows.size(); ++i) {
      const Window w = b.windows[i];
      for (int64_t t = 0; t < T; ++t)
        for (int64_t p = 0; p < P; ++p)
          ASSERT_EQ(b.timeseries[static_cast<size_t>((static_cast<int64_t>(i) * T + t) * P + p)],
                    value(w.run, w.start + t, p));
      const bool tagged = w.run < 2;  // shard 0's runs have embeddings and labels
      std::map<int32_t, int> count;
      for (int64_t t = 0; t < T; ++t) ++count[label_value(w.run, w.start + t)];
      int32_t majority = -1;
      int best = 0;
      for (auto [l, c] : count)
        if (l >= 0 && c > best) majority = l, best = c;
      EXPECT_EQ(b.label[i], tagged ? majority : -1) << "batch " << k << " row " << i;
      // The paired stimulus (docs/TRAINING.md, "The contrastive pairing"): the one shown at the window's start, else
      // the first shown at t <= T / 4, else none (0). With gaps of 3 and T = 8 (T / 4 = 2) the stride-1 windows hit
      // all three: a start in a stimulus, one or two time points before one, three before one (none).
      int64_t at = -1;
      for (int64_t t = 0; t <= T / 4 && at < 0; ++t)
        if (label_value(w.run, w.start + t) >= 0) at = t;
      ++pairing[tagged ? at : -2];
      for (int64_t kk = 0; kk < S; ++kk) {
        const double want = tagged && at >= 0 ? stim_value(w.run, w.start + at, kk) : 0.0;
        EXPECT_EQ(b.stimulus[i * S + static_cast<size_t>(kk)], want) << "batch " << k << " row " << i;
      }
    }
    if (k % 2) loader.recycle(std::move(b));  // refilled buffers must hold the new values only
  }
  for (const int64_t at : {-2, -1, 0, 1, 2}) EXPECT_GT(pairing[at], 0) << "no window paired at offset " << at;
  EXPECT_GE(loader.data_wait_seconds(), loader.last_wait_seconds());
  EXPECT_GE(loader.last_wait_seconds(), 0.0);
}

TEST_F(WindowLoaderTest, MemoryBudgetBoundsTheReadAhead) {
  const auto lengths = write_corpus(dir_);
  const SamplerOptions opt{8, 1, false, 4, 3};
  int64_t bytes = 0;
  {
    WindowLoader one(paths(), WindowSampler(lengths, opt), LoaderOptions{8, 1});  // under one batch: depth 1
    EXPECT_EQ(one.depth(), 1);
    bytes = one.batch_bytes();
    EXPECT_EQ(bytes, 4 * (8 * P + S) * 4 + 4 * 4 + 4 * static_cast<int64_t>(sizeof(Window)));
    EXPECT_TRUE(wait_read(one, 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(one.batches_read(), 1);
  }
  {
    WindowLoader big(paths(), WindowSampler(lengths, opt), LoaderOptions{8, 1000 * bytes});
    EXPECT_EQ(big.depth(), WindowLoader::kMaxDepth);
  }
  WindowLoader three(paths(), WindowSampler(lengths, opt), LoaderOptions{8, 4 * bytes - 1});
  EXPECT_EQ(three.depth(), 3);
  EXPECT_TRUE(wait_read(three, 3));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(three.batches_read(), 3);  // stopped: the queue is full
  three.next();
  EXPECT_TRUE(wait_read(three, 4));  // one taken, one more read
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(three.batches_read(), 4);
}

TEST_F(WindowLoaderTest, StateIsAfterTheBatchesTakenNotThePrefetchedOnes) {
  const auto lengths = write_corpus(dir_);
  const SamplerOptions opt{8, 1, true, 4, 11};
  WindowSampler reference(lengths, opt);
  WindowLoader loader(paths(), WindowSampler(lengths, opt), LoaderOptions{8, 1 << 20});
  EXPECT_EQ(loader.state(), reference.state());
  const int64_t taken = reference.batches_per_epoch() + 2;  // the state crosses an epoch
  for (int64_t k = 0; k < taken; ++k) {
    loader.next();
    reference.next_batch();
  }
  EXPECT_TRUE(wait_read(loader, taken + loader.depth()));
  EXPECT_EQ(loader.state(), reference.state());
  EXPECT_EQ(loader.state(), (SamplerState{1, 2}));
  // Resuming from the saved state gives the batch the first loader would have given next.
  WindowSampler restored(lengths, opt);
  restored.restore(loader.state());
  const WindowBatch expected = loader.next();
  // Beside `loader`, whose thread goes on reading: the two threads take turns on HDF5.
  WindowLoader resumed(paths(), std::move(restored), LoaderOptions{8, 1 << 20});
  const WindowBatch got = resumed.next();
  EXPECT_EQ(got.windows, expected.windows);
  EXPECT_EQ(got.timeseries, expected.timeseries);
}

TEST_F(WindowLoaderTest, CorruptChunkSurfacesFromNextNamingTheFile) {
  const auto lengths = write_corpus(dir_, 600);  // shard 1 run 1 (corpus run 3) spans chunks 0..2 of its shard
  const std::string path = paths()[1];
  std::string out;
  ASSERT_EQ(test::run_python(dir_,
                             "import sys, h5py\n"
                             "with h5py.File(sys.argv[1], 'r') as f:\n"
                             "    print(f['runs/timeseries'].id.get_chunk_info_by_coord((256, 0)).byte_offset + 100)\n",
                             path, out),
            0)
      << out;
  const long offset = std::stol(out);
  bfm::test::flip_byte(path, offset);
  const SamplerOptions opt{16, 1, false, 4, 5};
  for (const bool chunks : {true, false})
    for (const int threads : {1, 2}) {
      WindowSampler sampler(lengths, opt);
      const int64_t batches = sampler.batches_per_epoch();  // an epoch visits every window, the damaged ones included
      LoaderOptions lo{16, 1 << 20};
      lo.chunk_reads = chunks;
      lo.threads = threads;
      WindowLoader loader(paths(), std::move(sampler), lo);
      int64_t good = 0;
      std::string message;
      try {
        for (; good < batches; ++good) loader.next();
      } catch (const Error& e) {
        message = e.what();
      }
      EXPECT_LT(good, batches);
      EXPECT_THAT(message,
                  AllOf(HasSubstr(path), HasSubstr("run 1"), HasSubstr("corrupt"), HasSubstr("corpus run 3")));
      EXPECT_THROW(loader.next(), Error);  // and again
    }
  // The shard reader's chunk read says the same, for the damaged chunk only.
  ShardReader reader(path);
  ASSERT_TRUE(reader.chunk_layout(ShardReader::Rows::timeseries).direct);
  std::vector<unsigned char> buffer(static_cast<size_t>(reader.chunk_layout(ShardReader::Rows::timeseries).buffer_bytes()));
  EXPECT_NO_THROW(reader.read_chunk(ShardReader::Rows::timeseries, 0, buffer.data(), 1));
  EXPECT_NO_THROW(reader.read_chunk(ShardReader::Rows::timeseries, 2, buffer.data(), 1));
  EXPECT_THAT([&] { reader.read_chunk(ShardReader::Rows::timeseries, 1, buffer.data(), 1); },
              ::testing::ThrowsMessage<Error>(AllOf(HasSubstr(path), HasSubstr("run 1"), HasSubstr("corrupt"),
                                                    HasSubstr("Fletcher32"))));
}

TEST_F(WindowLoaderTest, MissingShardIsNamedByTheConstructor) {
  const auto lengths = write_corpus(dir_);
  auto files = paths();
  files[1] = (dir_ / "absent.h5").string();
  const SamplerOptions opt{8, 1, false, 4, 0};
  EXPECT_THAT([&] { WindowLoader l(files, WindowSampler(lengths, opt), LoaderOptions{8, 1}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("absent.h5")));
}

TEST_F(WindowLoaderTest, DestructorReturnsWithAFullQueueOrMidRead) {
  const auto lengths = write_corpus(dir_);
  const SamplerOptions opt{8, 1, false, 4, 3};
  const auto t0 = std::chrono::steady_clock::now();
  {
    WindowLoader full(paths(), WindowSampler(lengths, opt), LoaderOptions{8, 1 << 30});
    EXPECT_TRUE(wait_read(full, WindowLoader::kMaxDepth));
  }
  { WindowLoader fresh(paths(), WindowSampler(lengths, opt), LoaderOptions{8, 1 << 30}); }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

// ---- chunk reads

using test::fletcher32_by_the_book;  // HDF5's loop, word after word (tests/common/fletcher32_reference.h)

TEST(ShardReaderFletcher32, EqualsHdf5sLoopBitForBit) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 4000; ++trial) {
    const size_t n = trial < 3000 ? rng() % 2000 : 409600 + rng() % 9;
    std::vector<unsigned char> data(n);
    for (auto& byte : data) {  // random bytes, all 0xff (sums of 65535s), all zero, and a mix of the two
      const int kind = trial % 4;
      byte = static_cast<unsigned char>(kind == 0 ? rng() : kind == 1 ? 0xff : kind == 2 ? 0 : (rng() & 1) * 0xff);
    }
    ASSERT_EQ(fletcher32(data.data(), n), fletcher32_by_the_book(data.data(), n)) << "bytes " << n << " trial " << trial;
  }
}

// Sets BFM_NO_MMAP for the scope (shards opened meanwhile are read with pread into the chunk cache).
struct NoMmap {
  NoMmap() { ::setenv("BFM_NO_MMAP", "1", 1); }
  ~NoMmap() { ::unsetenv("BFM_NO_MMAP"); }
};

class WindowLoaderChunkReads : public WindowLoaderTest {
 protected:
  // Shards 0, 1: ours, float32 (write_corpus: shard 0 with embeddings and labels); 2: h5py, gzip + shuffle +
  // Fletcher32; 3: h5py, no filter, chunks of 100 rows; 4: h5py, big-endian float32 with Fletcher32; 5: h5py,
  // contiguous; 6: ours, float16 in chunks of 48 rows. All 5 parcels.
  std::vector<std::string> write_all_layouts() {
    write_corpus(dir_);
    const std::string code = R"PY(
import sys, h5py, numpy as np
out = sys.argv[1]
P = 5
rng = np.random.default_rng(7)
def shard(name, lengths, **kw):
    ts = rng.standard_normal((sum(lengths), P)).astype(np.float32)
    n = len(lengths)
    with h5py.File(out + "/" + name, "w") as f:
        f.attrs["format"] = "bfm-shard"
        f.attrs["format_version"] = np.int64(1)
        f.attrs["n_parcels"] = np.int64(P)
        f.attrs["atlas"] = "toy"
        f["parcels/labels"] = [str(i) for i in range(P)]
        f.create_dataset("runs/timeseries", data=ts, **kw)
        f["runs/offset"] = np.cumsum([0] + lengths[:-1]).astype(np.int64)
        f["runs/length"] = np.array(lengths, np.int64)
        f["runs/subject"] = np.arange(n, dtype=np.int32)
        f["runs/tr"] = np.full(n, 2.0)
        for k in ("session", "study", "task", "site"):
            f["runs/" + k] = ["x"] * n
        f["subjects/id"] = [name + "/sub-%d" % i for i in range(n)]
        f["subjects/age"] = np.zeros(n, np.float32)
        f["subjects/sex"] = ["F"] * n
        f["subjects/diagnosis"] = ["control"] * n
shard("shard-00002.h5", [300, 90], chunks=(256, P), fletcher32=True, compression="gzip", shuffle=True)
shard("shard-00003.h5", [120, 333], chunks=(100, P))
shard("shard-00004.h5", [280], chunks=(256, P), fletcher32=True, dtype=">f4")
shard("shard-00005.h5", [77, 150])
print("OK")
)PY";
    std::string out;
    EXPECT_EQ(test::run_python(dir_, code, dir_.string(), out), 0) << out;
    {
      ShardHeader h;
      h.n_parcels = P;
      h.atlas = "toy";
      h.storage = Storage::float16;
      h.chunk_rows = 48;  // not the default: windows of 30 straddle these chunks often
      ShardWriter w((dir_ / shard_file_name(6)).string(), h);
      for (int64_t n : {270, 45}) {
        std::vector<float> x(static_cast<size_t>(n * P));
        for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) * 0.25f - 3.0f;
        RunView v;
        v.meta.subject = "studyH/sub-" + std::to_string(n);
        v.meta.tr = 1.0;
        v.meta.length = n;
        v.timeseries = x.data();
        w.add_run(v);
      }
      w.commit();
    }
    std::vector<std::string> files;
    for (int64_t s = 0; s <= 6; ++s) files.push_back((dir_ / shard_file_name(s)).string());
    return files;
  }
};

TEST_F(WindowLoaderChunkReads, EqualThePerWindowHdf5ReadsOnEveryLayout) {
  const auto files = write_all_layouts();
  std::vector<int64_t> lengths;
  {
    const std::vector<bool> direct = {true, true, false, true, false, false, true};
    for (size_t s = 0; s < files.size(); ++s) {
      ShardReader r(files[s]);
      EXPECT_EQ(r.chunk_layout(ShardReader::Rows::timeseries).direct, direct[s]) << files[s];
      for (const auto& run : r.runs()) lengths.push_back(run.length);
    }
    ShardReader three(files[3]);
    EXPECT_EQ(three.chunk_layout(ShardReader::Rows::timeseries).rows, 100);
    EXPECT_EQ(three.header().chunk_rows, 100);
    ShardReader six(files[6]);
    EXPECT_EQ(six.chunk_layout(ShardReader::Rows::timeseries).rows, 48);
    EXPECT_EQ(six.header().chunk_rows, 48);
  }
  {
    ShardReader mapped(files[0]);
    EXPECT_TRUE(mapped.mapped());
    const NoMmap pread_only;
    ShardReader plain(files[0]);
    EXPECT_FALSE(plain.mapped());
  }
  const int64_t T = 30;
  for (const bool mmap : {true, false})
  for (const int64_t block : {int64_t{0}, int64_t{64}}) {
    std::unique_ptr<NoMmap> pread_only;
    if (!mmap) pread_only = std::make_unique<NoMmap>();
    SamplerOptions opt{T, 3, true, 8, 21};
    opt.block = block;
    opt.shuffle_blocks = 3;
    for (const int threads : {1, 3}) {
      LoaderOptions per_window{T, 1 << 20};
      per_window.chunk_reads = false;
      LoaderOptions chunks{T, 1 << 20};
      chunks.cache_bytes = 0;  // one batch's chunks: evictions all along
      chunks.threads = threads;
      WindowLoader want(files, WindowSampler(lengths, opt), per_window);
      WindowLoader got(files, WindowSampler(lengths, opt), chunks);
      EXPECT_EQ(want.cache_bytes(), 0);
      EXPECT_GT(got.cache_bytes(), 0);
      const int64_t batches = WindowSampler(lengths, opt).batches_per_epoch() * 3 / 2;
      for (int64_t k = 0; k < batches; ++k) {
        const WindowBatch a = want.next(), b = got.next();
        ASSERT_EQ(a.windows, b.windows) << "batch " << k;
        ASSERT_EQ(a.timeseries, b.timeseries) << "block " << block << " threads " << threads << " batch " << k
                                              << " mmap " << mmap;
        ASSERT_EQ(a.stimulus, b.stimulus) << "batch " << k;
        ASSERT_EQ(a.label, b.label) << "batch " << k;
        ASSERT_EQ(a.state_after, b.state_after);
      }
      const LoaderStats st = got.stats();
      EXPECT_GT(st.chunks_read, 0);
      EXPECT_GE(st.chunk_bytes_read, st.chunks_read * T * P * 2);
    }
  }
}

TEST_F(WindowLoaderChunkReads, ACachedChunkIsReadOnceWhileCached) {
  const NoMmap pread_only;  // the cache serves pread chunks (mapped ones are the page cache's)
  const auto files = write_all_layouts();
  std::vector<int64_t> lengths;
  int64_t chunks = 0;
  for (const auto& f : files) {
    ShardReader r(f);
    for (const auto& run : r.runs()) lengths.push_back(run.length);
    for (const auto which : {ShardReader::Rows::timeseries, ShardReader::Rows::stimulus, ShardReader::Rows::label})
      if (r.has_rows(which)) chunks += r.chunk_layout(which).n_chunks;
  }
  const SamplerOptions opt{20, 1, false, 4, 2};
  WindowLoader loader(files, WindowSampler(lengths, opt), LoaderOptions{20, 64 << 20});  // the cache holds it all
  const int64_t per_epoch = WindowSampler(lengths, opt).batches_per_epoch();
  for (int64_t k = 0; k < per_epoch; ++k) loader.next();
  const LoaderStats first = loader.stats();
  EXPECT_LE(first.chunks_read, chunks);  // each chunk read at most once in the epoch
  EXPECT_GT(first.chunk_hits, 0);
  for (int64_t k = 0; k < per_epoch; ++k) loader.next();
  // The read-ahead may have started the third epoch: nothing new is read anyway.
  EXPECT_EQ(loader.stats().chunks_read, first.chunks_read);
}

// A shard truncated under the loader while it reads it through the mapping: the pages past the new end raise SIGBUS
// in the reading thread, which must become an error from next() naming the file (not the death of the process).
TEST_F(WindowLoaderChunkReads, AShardTruncatedWhileMappedIsAnErrorNamingIt) {
  const auto lengths = write_corpus(dir_, 600);
  const std::vector<std::string> files = {(dir_ / shard_file_name(0)).string(), (dir_ / shard_file_name(1)).string()};
  ASSERT_TRUE(ShardReader(files[1]).mapped());
  const SamplerOptions opt{8, 1, false, 4, 3};
  LoaderOptions lo{8, 1};  // the smallest budget: one batch read ahead
  lo.cache_bytes = 0;
  WindowLoader loader(files, WindowSampler(lengths, opt), lo);
  const auto size = fs::file_size(files[1]);
  fs::resize_file(files[1], 4096);  // the header stays; every chunk is gone
  bool failed = false;
  for (int64_t k = 0; k < WindowSampler(lengths, opt).batches_per_epoch() && !failed; ++k) {
    try {
      loader.next();
    } catch (const Error& e) {
      failed = true;
      EXPECT_THAT(e.what(), AllOf(HasSubstr(files[1]), HasSubstr("mapping"), HasSubstr("truncated"))) << e.what();
    }
  }
  EXPECT_TRUE(failed) << "read a whole epoch of a shard truncated from " << size << " to 4096 bytes";
}

}  // namespace
}  // namespace bfm::io
