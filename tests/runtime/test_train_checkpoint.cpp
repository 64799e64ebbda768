// The training checkpoint (runtime/train_checkpoint.h), run as one process and (built with BFM_TEST_MPI_MAIN) under
// mpirun with 2 and 4 ranks, where every rank checks what it read. The values are random bit patterns (NaN payloads,
// denormals and -0 included) regenerated from their arena index, so a read is compared with the formula, not with
// what the writer held; h5py reads the file as the independent reader, and recomputes the documented checksum.
// The one-process program also runs the MPI program to write a ZeRO-sharded checkpoint with 2 ranks and read it
// back with 4, then reads it whole itself (a resume on another number of ranks), and kills a writer mid-file.
#include <gmock/gmock.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "../common/mpi_test_main.h"
#include "model/config.h"
#include "model/params.h"
#include "base/error.h"
#include "base/rng.h"
#include "runtime/train_checkpoint.h"
#include "runtime/world.h"
#include "tests/common/test_files.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using bfm::model::ModelConfig;
using bfm::model::ParamLayout;
using bfm::runtime::CheckpointTensors;
using bfm::runtime::TrainState;
using ::testing::HasSubstr;

int rank() { return bfm::runtime::world().rank; }
int ranks() { return bfm::runtime::world().size; }

void barrier() {
#ifdef BFM_WITH_MPI
  if (ranks() > 1) MPI_Barrier(bfm::runtime::world().comm);
#endif
}

// Rank 0's string on every rank.
std::string from_rank0(std::string s) {
#ifdef BFM_WITH_MPI
  if (ranks() > 1) {
    uint64_t n = s.size();
    MPI_Bcast(&n, 1, MPI_UINT64_T, 0, bfm::runtime::world().comm);
    s.resize(n);
    MPI_Bcast(s.data(), static_cast<int>(n), MPI_CHAR, 0, bfm::runtime::world().comm);
  }
#endif
  return s;
}

ModelConfig config(int d_model = 16, bool contrastive = true) {
  ModelConfig c;
  c.n_parcels = 7, c.window = 12, c.patch_len = 4, c.d_model = d_model, c.n_heads = 4, c.n_layers = 2;
  c.mae = true, c.contrastive = contrastive, c.decoder = bfm::model::DecoderConfig{8, 2, 1};
  c.stim_dim = 5, c.proj_dim = 6;
  return c;
}

// The 32 bits of value i of a stream: any pattern, NaNs included.
uint32_t bits(uint64_t seed, int64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(i) * 0xD1B54A32D192ED03ULL + 1;
  z = (z ^ (z >> 31)) * 0x7FB5D329728EA185ULL;
  z = (z ^ (z >> 27)) * 0x81DADEF4BC2DD44DULL;
  return static_cast<uint32_t>(z >> 32);
}
// x[k] := value (first + k) of the stream.
void fill(std::vector<float>& x, uint64_t seed, int64_t first) {
  for (size_t k = 0; k < x.size(); ++k) {
    const uint32_t b = bits(seed, first + static_cast<int64_t>(k));
    std::memcpy(&x[k], &b, sizeof b);
  }
}
uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

struct Range {
  int64_t begin = -1, end = -1;
  bool sharded() const { return begin >= 0; }
};
// Three ways to cut [0, A) over R ranks: uneven growing, uneven shrinking, and one where rank 0 holds nothing.
int64_t cut(int split, int64_t A, int k, int R) {
  if (split == 0) return A * k * k / (R * R);
  if (split == 1) return A - A * (R - k) * (R - k) / (R * R);
  return k <= 1 && R > 1 ? 0 : A * k / R;
}
Range shard(int split, int64_t A) { return {cut(split, A, rank(), ranks()), cut(split, A, rank() + 1, ranks())}; }

// The checkpoint's view of arenas laid out as `layout` (what model::BrainModel::checkpoint_tensors hands over).
CheckpointTensors view(const ParamLayout& layout, float* params, float* m, float* v, int64_t begin, int64_t end) {
  CheckpointTensors t;
  for (const auto& p : layout.params()) t.tensors.push_back({p.name, p.shape, p.offset, p.size});
  t.arena_size = layout.total();
  t.params = params;
  t.m = m;
  t.v = v;
  t.shard_begin = begin;
  t.shard_end = end;
  return t;
}

// A run's arenas: params, m, v from the streams 10 * seed + 1, 2, 3 (moments: the full arena or one shard).
struct Arenas {
  std::vector<float> params, m, v;
  CheckpointTensors tensors;
  Arenas(const ParamLayout& layout, uint64_t seed, Range r = {}) {
    const int64_t A = layout.total();
    const int64_t first = r.sharded() ? r.begin : 0, n = r.sharded() ? r.end - r.begin : A;
    params.resize(static_cast<size_t>(A));
    m.resize(static_cast<size_t>(n));
    v.resize(static_cast<size_t>(n));
    fill(params, 10 * seed + 1, 0);
    fill(m, 10 * seed + 2, first);
    fill(v, 10 * seed + 3, first);
    tensors = view(layout, params.data(), m.data(), v.data(), r.begin, r.end);
  }
};

TrainState state(int64_t step, bool as_rank0 = true) {
  TrainState s;
  s.step = step;
  s.skipped_steps = 3 + step;
  s.skipped_in_a_row = 1;
  s.sampler_epoch = 7;
  s.sampler_batch = 1234567890123ULL + static_cast<uint64_t>(step);
  bfm::Rng mask(static_cast<uint64_t>(step));
  mask.normal();  // leaves a spare normal: the state's last two words are not zero
  for (uint64_t w : mask.state()) s.rng_state.push_back(w);
  for (uint64_t w : bfm::Rng::stream(9, 1).state()) s.rng_state.push_back(w);
  s.config_json = R"({"model": {"d_model": 16, "note": "µ \"quoted\" \\ tab\t"}, "train": {"lr": 0.001}})";
  if (as_rank0)
    for (int i = 0; i < 40; ++i) s.metrics_jsonl += R"({"step": )" + std::to_string(i) + R"(, "loss": 0.5})" "\n";
  else
    s.metrics_jsonl = "rank " + std::to_string(rank()) + "'s metrics, which are not written\n";
  return s;
}

// Reads `path` with moments whole or as shard `r` and compares everything with the streams of `seed` and `want`.
void read_and_check(const std::string& path, const ParamLayout& layout, uint64_t seed, const TrainState& want,
                    int writers, Range r = {}) {
  const int64_t A = layout.total();
  const int64_t first = r.sharded() ? r.begin : 0, n = r.sharded() ? r.end - r.begin : A;
  std::vector<float> params(static_cast<size_t>(A)), m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
  fill(params, 999, 0);  // garbage, which the read must replace everywhere
  fill(m, 998, 0);
  fill(v, 997, 0);
  const TrainState s = bfm::runtime::read_train_checkpoint(path, view(layout, params.data(), m.data(), v.data(), r.begin, r.end));

  std::vector<bool> in_tensor(static_cast<size_t>(A), false);
  for (const auto& p : layout.params())
    for (int64_t j = 0; j < p.size; ++j) in_tensor[static_cast<size_t>(p.offset + j)] = true;
  int64_t bad = 0, first_bad = -1;
  for (int64_t i = 0; i < A; ++i) {
    const uint32_t expect = in_tensor[static_cast<size_t>(i)] ? bits(10 * seed + 1, i) : 0u;  // padding: zeroed
    if (bits_of(params[static_cast<size_t>(i)]) != expect && bad++ == 0) first_bad = i;
  }
  ASSERT_EQ(bad, 0) << "parameter values differ, first at arena index " << first_bad << " (rank " << rank() << ")";
  for (int64_t k = 0; k < n; ++k) {
    if (bits_of(m[static_cast<size_t>(k)]) != bits(10 * seed + 2, first + k) && bad++ == 0) first_bad = first + k;
    if (bits_of(v[static_cast<size_t>(k)]) != bits(10 * seed + 3, first + k) && bad++ == 0) first_bad = first + k;
  }
  ASSERT_EQ(bad, 0) << "moment values differ, first at arena index " << first_bad << " (rank " << rank() << ")";
  EXPECT_EQ(s.step, want.step);
  EXPECT_EQ(s.skipped_steps, want.skipped_steps);
  EXPECT_EQ(s.skipped_in_a_row, want.skipped_in_a_row);
  EXPECT_EQ(s.sampler_epoch, want.sampler_epoch);
  EXPECT_EQ(s.sampler_batch, want.sampler_batch);
  EXPECT_EQ(s.rng_state, want.rng_state);
  EXPECT_EQ(s.config_json, want.config_json);
  EXPECT_EQ(s.metrics_jsonl, want.metrics_jsonl);
  EXPECT_EQ(s.world_size, writers);
}

// The error message of f() (the same on every rank), or "" when it did not throw.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const bfm::Error& e) {
    return e.what();
  }
  return "";
}

class TrainCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = from_rank0(rank() == 0 ? bfm::test::make_temp_dir("train-ckpt").string() : "");
    barrier();
  }
  void TearDown() override {
    barrier();
    if (rank() == 0) fs::remove_all(dir_);
  }
  std::string write(const ParamLayout& layout, int64_t step, uint64_t seed, int keep = 3, Range r = {},
                    const std::string& dir = "") {
    Arenas a(layout, seed, r);
    return bfm::runtime::write_train_checkpoint(dir.empty() ? dir_ : dir, a.tensors, state(step, rank() == 0), keep);
  }
  std::string read_latest_file() const {
    std::ifstream in(fs::path(dir_) / "latest");
    std::string line;
    std::getline(in, line);
    return line;
  }
  // A copy of `path` that rank 0 damages with `damage`; every rank gets its name.
  template <class F>
  std::string damaged_copy(const std::string& path, const std::string& name, F&& damage) {
    const std::string copy = (fs::path(dir_) / name).string();
    if (rank() == 0) {
      fs::copy_file(path, copy, fs::copy_options::overwrite_existing);
      damage(copy);
    }
    barrier();
    return copy;
  }
  std::string dir_;
};

TEST_F(TrainCheckpoint, RoundTripIsBitExact) {
  const ParamLayout layout(config());
  const std::string path = write(layout, 42, 1);
  EXPECT_EQ(path, (fs::path(dir_) / "ckpt-00000042.h5").string());
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(fs::path(dir_) / ".ckpt-00000042.h5.partial"));
  EXPECT_EQ(read_latest_file(), "ckpt-00000042.h5");
  EXPECT_EQ(bfm::runtime::latest_train_checkpoint(dir_), path);
  read_and_check(path, layout, 1, state(42), ranks());
}

TEST_F(TrainCheckpoint, ShardedMomentsReadBackUnderOtherRangesAndWhole) {
  const ParamLayout layout(config());
  const int64_t A = layout.total();
  const std::string path = write(layout, 8, 2, 3, shard(0, A));
  for (int split : {1, 2}) {
    SCOPED_TRACE("read split " + std::to_string(split));
    read_and_check(path, layout, 2, state(8), ranks(), shard(split, A));
  }
  read_and_check(path, layout, 2, state(8), ranks());
  // Whole moments written, shards read.
  const std::string whole = write(layout, 9, 3);
  read_and_check(whole, layout, 3, state(9), ranks(), shard(2, A));
}

TEST_F(TrainCheckpoint, ShardsThatDoNotTileTheArenaAreAnErrorOnEveryRank) {
  const ParamLayout layout(config());
  const int64_t A = layout.total();
  // Every rank one range short of the next one's start (or, alone, short of the arena's end).
  Range r = shard(0, A);
  r.end -= 1;
  const std::string message = error_of([&] { write(layout, 1, 1, 3, r); });
  EXPECT_THAT(message, HasSubstr("ckpt-00000001.h5")) << message;
  EXPECT_THAT(message, HasSubstr("moment shard")) << message;
  EXPECT_FALSE(fs::exists(fs::path(dir_) / "ckpt-00000001.h5"));
  EXPECT_THAT(error_of([&] { write(layout, 1, 1, 0); }), HasSubstr("keep 0"));
}

TEST_F(TrainCheckpoint, KeepLeavesTheNewestAndLatestNamesTheNewest) {
  const ParamLayout layout(config());
  for (int64_t step : {100, 200, 300, 1000}) write(layout, step, 4, 2);
  barrier();
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt-00000300.h5", "ckpt-00001000.h5", "latest"}));
  EXPECT_EQ(read_latest_file(), "ckpt-00001000.h5");
  EXPECT_EQ(bfm::runtime::latest_train_checkpoint(dir_), (fs::path(dir_) / "ckpt-00001000.h5").string());
  read_and_check(bfm::runtime::latest_train_checkpoint(dir_), layout, 4, state(1000), ranks());
}

TEST_F(TrainCheckpoint, AnotherModelConfigIsAnErrorNamingTheTensor) {
  const ParamLayout layout(config()), wider(config(24)), no_contrastive(config(16, false));
  const std::string path = write(layout, 5, 5);
  // The first tensor (in the model's order) whose shape differs, found here from the two layouts.
  std::string first_differing;
  for (const auto& p : wider.params())
    if (first_differing.empty() && (!layout.has(p.name) || layout.at(p.name).shape != p.shape)) first_differing = p.name;
  ASSERT_FALSE(first_differing.empty());
  Arenas w(wider, 5);
  std::string message = error_of([&] { bfm::runtime::read_train_checkpoint(path, w.tensors); });
  EXPECT_THAT(message, HasSubstr(path)) << message;
  EXPECT_THAT(message, HasSubstr("'" + first_differing + "'")) << message;
  EXPECT_THAT(message, HasSubstr("shape")) << message;
  // The checkpoint has tensors the model does not (brain_proj.weight is the first by name).
  Arenas fewer(no_contrastive, 5);
  message = error_of([&] { bfm::runtime::read_train_checkpoint(path, fewer.tensors); });
  EXPECT_THAT(message, HasSubstr(path)) << message;
  EXPECT_THAT(message, HasSubstr("'brain_proj.weight' of the checkpoint is not in the model")) << message;
  // The model has tensors the checkpoint does not.
  const std::string smaller = write(no_contrastive, 6, 5);
  Arenas more(layout, 5);
  message = error_of([&] { bfm::runtime::read_train_checkpoint(smaller, more.tensors); });
  EXPECT_THAT(message, HasSubstr(smaller)) << message;
  EXPECT_THAT(message, HasSubstr("'brain_proj.weight' of the model is not in the checkpoint")) << message;
}

TEST_F(TrainCheckpoint, TruncatedFileIsAnErrorNamingIt) {
  const ParamLayout layout(config());
  const std::string path = write(layout, 5, 6);
  const auto size = fs::file_size(path);
  for (auto keep : {size / 2, size - 1, uintmax_t{100}}) {
    const std::string copy = damaged_copy(path, "truncated.h5", [&](const std::string& p) { fs::resize_file(p, keep); });
    Arenas a(layout, 6);
    const std::string message = error_of([&] { bfm::runtime::read_train_checkpoint(copy, a.tensors); });
    EXPECT_THAT(message, HasSubstr(copy)) << "kept " << keep << " bytes: " << message;
  }
  // latest naming a truncated file: an error naming both.
  const std::string copy = damaged_copy(path, "truncated.h5", [&](const std::string& p) { fs::resize_file(p, size / 2); });
  if (rank() == 0) std::ofstream(fs::path(dir_) / "latest") << "truncated.h5\n";
  barrier();
  const std::string message = error_of([&] { bfm::runtime::latest_train_checkpoint(dir_); });
  EXPECT_THAT(message, HasSubstr((fs::path(dir_) / "latest").string())) << message;
  EXPECT_THAT(message, HasSubstr(copy)) << message;
}

// Where h5py says a dataset's values and object header lie in the file: "<data offset> <header address>".
std::pair<long, long> h5py_offsets(const std::string& dir, const std::string& path, const std::string& dataset) {
  std::string out;
  const int rc = bfm::test::run_python(
      dir,
      "import sys, h5py\n"
      "with h5py.File(sys.argv[1], 'r') as f:\n"
      "    d = f[sys.argv[2]]\n"
      "    print(d.id.get_offset(), h5py.h5o.get_info(d.id).addr)\n",
      path + " " + dataset, out);
  EXPECT_EQ(rc, 0) << out;
  long data = -1, header = -1;
  std::istringstream(out) >> data >> header;
  return {data, header};
}

TEST_F(TrainCheckpoint, FlippedByteIsAnErrorNamingTheFileAndDataset) {
  const ParamLayout layout(config());
  const std::string path = write(layout, 5, 7);
  const std::string tensor = "/params/blocks.1.attn.qkv.weight";
  struct Case {
    std::string dataset;
    bool header;  // flip a byte of the object header (HDF5's checksum) instead of the values (ours)
    long skip;    // bytes into it
  };
  for (const Case& c : {Case{tensor, false, 13}, Case{"/optimizer/v", false, 4 * 1000 + 2},
                        Case{"/optimizer/m", false, 0}, Case{tensor, true, 20}}) {
    SCOPED_TRACE(c.dataset + (c.header ? " header" : " values"));
    long at = 0;
    if (rank() == 0) {
      const auto [data, header] = h5py_offsets(dir_, path, c.dataset);
      at = (c.header ? header : data) + c.skip;
    }
    at = std::stol(from_rank0(std::to_string(at)));
    ASSERT_GT(at, 0);
    const std::string copy = damaged_copy(path, "flipped.h5", [&](const std::string& p) { bfm::test::flip_byte(p, at); });
    Arenas a(layout, 7);
    const std::string message = error_of([&] { bfm::runtime::read_train_checkpoint(copy, a.tensors); });
    EXPECT_THAT(message, HasSubstr(copy)) << message;
    EXPECT_THAT(message, HasSubstr(c.dataset)) << message;
  }
}

TEST_F(TrainCheckpoint, StalePartialFromACrashLeavesThePreviousCheckpoint) {
  const ParamLayout layout(config());
  const std::string previous = write(layout, 10, 8);
  // A writer of step 20 died: its .partial is half a file, latest still names step 10.
  const fs::path partial = fs::path(dir_) / ".ckpt-00000020.h5.partial";
  if (rank() == 0) {
    fs::copy_file(previous, partial);
    fs::resize_file(partial, fs::file_size(previous) / 2);
  }
  barrier();
  EXPECT_EQ(bfm::runtime::latest_train_checkpoint(dir_), previous);
  read_and_check(bfm::runtime::latest_train_checkpoint(dir_), layout, 8, state(10), ranks());
  // The next checkpoint clears the stale file away.
  write(layout, 30, 8);
  barrier();
  EXPECT_FALSE(fs::exists(partial));
  EXPECT_EQ(read_latest_file(), "ckpt-00000030.h5");
}

TEST_F(TrainCheckpoint, LatestMissingOrNamingAMissingFile) {
  EXPECT_EQ(bfm::runtime::latest_train_checkpoint(dir_), "");
  EXPECT_EQ(bfm::runtime::latest_train_checkpoint(dir_ + "/no-such-folder"), "");
  barrier();
  if (rank() == 0) std::ofstream(fs::path(dir_) / "latest") << "ckpt-00000007.h5\n";
  barrier();
  const std::string message = error_of([&] { bfm::runtime::latest_train_checkpoint(dir_); });
  EXPECT_THAT(message, HasSubstr((fs::path(dir_) / "latest").string())) << message;
  EXPECT_THAT(message, HasSubstr((fs::path(dir_) / "ckpt-00000007.h5").string())) << message;
  EXPECT_THAT(message, HasSubstr("does not exist")) << message;
}

TEST_F(TrainCheckpoint, H5pyReadsTheTensorsByNameAndTheDocumentedChecksums) {
  const ParamLayout layout(config());
  const std::string path = write(layout, 11, 9);
  if (rank() == 0) {
    // What the test wrote, as raw bytes and a layout listing, for Python to compare with.
    Arenas a(layout, 9);
    const TrainState s = state(11);
    std::ofstream(fs::path(dir_) / "params.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(a.params.data()), static_cast<std::streamsize>(a.params.size() * 4));
    std::ofstream(fs::path(dir_) / "m.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(a.m.data()), static_cast<std::streamsize>(a.m.size() * 4));
    std::ofstream(fs::path(dir_) / "v.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(a.v.data()), static_cast<std::streamsize>(a.v.size() * 4));
    std::ofstream listing(fs::path(dir_) / "layout.txt");
    for (const auto& p : layout.params()) {
      listing << p.name << " " << p.offset;
      for (int64_t d : p.shape) listing << " " << d;
      listing << "\n";
    }
    listing.close();
    std::ofstream(fs::path(dir_) / "config.json", std::ios::binary) << s.config_json;
    std::ofstream(fs::path(dir_) / "metrics.jsonl", std::ios::binary) << s.metrics_jsonl;
    std::ofstream rng(fs::path(dir_) / "rng.txt");
    for (uint64_t w : s.rng_state) rng << w << "\n";
    rng.close();
    std::string out;
    const int rc = bfm::test::run_python(dir_, R"(
import sys, h5py, numpy as np
path, d, step, batch, writers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
arena = np.fromfile(d + '/params.bin', dtype='<u4')
moments = {'m': np.fromfile(d + '/m.bin', dtype='<u4'), 'v': np.fromfile(d + '/v.bin', dtype='<u4')}

def checksum(bits, first=0):  # docs/CHECKPOINT.md
    i = np.arange(first, first + bits.size, dtype=np.uint64)
    z = (i << np.uint64(32)) | bits.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return int((z ^ (z >> np.uint64(31))).sum(dtype=np.uint64))

with h5py.File(path, 'r') as f:
    assert f.attrs['format'] == b'bfm-train-checkpoint', f.attrs['format']
    assert f.attrs['format_version'] == 1
    assert f.attrs['arena_size'] == arena.size
    names = []
    for line in open(d + '/layout.txt'):
        name, offset, *shape = line.split()
        offset, shape = int(offset), tuple(int(s) for s in shape)
        ds = f['params'][name]
        assert ds.shape == shape and ds.dtype == np.float32, (name, ds.shape, shape, ds.dtype)
        size = int(np.prod(shape, dtype=np.int64))
        want = arena[offset:offset + size].reshape(shape)
        got = np.asarray(ds[()]).view(np.uint32)
        assert np.array_equal(got, want), name
        assert ds.attrs['offset'] == offset, name
        assert int(ds.attrs['checksum']) == checksum(want.ravel()), name
        names.append(name)
    assert sorted(names) == sorted(f['params'].keys())
    for key, want in moments.items():
        ds = f['optimizer'][key]
        assert ds.shape == (arena.size,) and ds.dtype == np.float32
        assert np.array_equal(ds[()].view(np.uint32), want), key
        assert int(ds.attrs['checksum']) == checksum(want), key
    st = f['state']
    assert st.attrs['step'] == step and st.attrs['sampler_batch'] == batch and st.attrs['world_size'] == writers
    rng = [int(x) for x in open(d + '/rng.txt')]
    assert st['rng_state'].dtype == np.uint64 and [int(x) for x in st['rng_state'][()]] == rng
    assert st['config_json'][()].decode('utf-8') == open(d + '/config.json', encoding='utf-8').read()
    assert st['metrics_jsonl'][()].decode('utf-8') == open(d + '/metrics.jsonl', encoding='utf-8').read()
print('ok', len(names), 'tensors')
)",
                                         path + " " + dir_ + " 11 " + std::to_string(s.sampler_batch) + " " +
                                             std::to_string(ranks()),
                                         out);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_THAT(out, HasSubstr("ok " + std::to_string(layout.params().size()) + " tensors")) << out;
  }
}

TEST_F(TrainCheckpoint, RanksThatDisagreeOnTheStateFailTogether) {
  if (ranks() < 2) GTEST_SKIP() << "needs several ranks";
  const ParamLayout layout(config());
  Arenas a(layout, 1);
  TrainState s = state(12, rank() == 0);
  if (rank() == 1) s.sampler_batch += 1;
  const std::string message = error_of([&] { bfm::runtime::write_train_checkpoint(dir_, a.tensors, s, 2); });
  EXPECT_THAT(message, HasSubstr("ckpt-00000012.h5")) << message;
  EXPECT_THAT(message, HasSubstr("rank 1's training state")) << message;
  barrier();
  EXPECT_FALSE(fs::exists(fs::path(dir_) / "ckpt-00000012.h5"));
  EXPECT_FALSE(fs::exists(fs::path(dir_) / ".ckpt-00000012.h5.partial"));
}

// Whether an environment variable is one that MPI set in this process (a singleton's PMIx server and the like):
// a program started from here must not inherit those, or its own mpirun or MPI_Init tries to join this process.
bool set_by_mpi(const std::string& var) {
  for (const char* prefix : {"PMIX_", "ORTE_", "OMPI_MCA_ess", "OMPI_MCA_orte_", "OMPI_MCA_pmix", "OMPI_APP_CTX",
                             "OMPI_COMMAND", "OMPI_FIRST_RANKS", "OMPI_COMM_WORLD", "OMPI_UNIVERSE"})
    if (var.rfind(prefix, 0) == 0) return true;
  return false;
}

// Starts `argv` with this environment (less MPI's) plus `env`, output to `log` when given; returns its pid.
pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env, const std::string& log = "") {
  std::vector<std::string> all_env = env;
  for (char** e = environ; *e; ++e)
    if (!set_by_mpi(*e)) all_env.emplace_back(*e);
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : all_env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!log.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
  }
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0].c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}
pid_t spawn_self(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  std::vector<std::string> all = {fs::read_symlink("/proc/self/exe").string()};
  all.insert(all.end(), args.begin(), args.end());
  return spawn(all, env);
}

// A model of about 25M parameters: its checkpoint (300 MB) takes long enough to write that it can be killed midway.
ModelConfig big_config() {
  ModelConfig c = config(512, false);
  c.n_layers = 8;
  c.n_heads = 8;
  return c;
}

// Run by KilledWriterLeavesThePreviousCheckpoint in a process of its own: writes a big checkpoint of step 20.
TEST(TrainCheckpointHelper, WriteBigCheckpoint) {
  const char* dir = std::getenv("BFM_CKPT_KILL_DIR");
  if (!dir) GTEST_SKIP() << "run by KilledWriterLeavesThePreviousCheckpoint";
  const ParamLayout layout(big_config());
  Arenas a(layout, 3);
  bfm::runtime::write_train_checkpoint(dir, a.tensors, state(20), 2);
}

TEST_F(TrainCheckpoint, KilledWriterLeavesThePreviousCheckpoint) {
  if (ranks() > 1) GTEST_SKIP() << "one process";
  const ParamLayout layout(config());
  const std::string previous = write(layout, 10, 8);
  const fs::path partial = fs::path(dir_) / ".ckpt-00000020.h5.partial";
  const pid_t pid = spawn_self({"--gtest_filter=TrainCheckpointHelper.WriteBigCheckpoint"}, {"BFM_CKPT_KILL_DIR=" + dir_});
  ASSERT_GT(pid, 0);
  // Kill it once values are landing in the partial file (more than 4 MB of it written).
  int status = 0;
  bool exited = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    std::error_code ec;
    if (fs::file_size(partial, ec) > (4u << 20) && !ec) break;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      exited = true;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  ASSERT_FALSE(exited) << "the writer finished (status " << status << ") before it could be killed";
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_TRUE(fs::exists(partial));
  EXPECT_FALSE(fs::exists(fs::path(dir_) / "ckpt-00000020.h5"));
  EXPECT_EQ(read_latest_file(), "ckpt-00000010.h5");
  EXPECT_EQ(bfm::runtime::latest_train_checkpoint(dir_), previous);
  read_and_check(previous, layout, 8, state(10), 1);
  write(layout, 30, 8);
  EXPECT_FALSE(fs::exists(partial));
}

// Resharding across world sizes: this program (one process) runs the MPI program to write ZeRO shards with 2 ranks
// and to read them with 4 ranks under other ranges; then reads the moments whole itself.
TEST(TrainCheckpointReshard, WrittenByTwoRanksReadByFourAndByOne) {
#if !defined(BFM_MPIEXEC) || !defined(BFM_CKPT_MPI_TESTS)
  GTEST_SKIP() << "built without MPI";
#else
  if (std::getenv("BFM_RESHARD_DIR")) GTEST_SKIP() << "the MPI side";
  const fs::path dir = bfm::test::make_temp_dir("train-ckpt-reshard");
  for (const std::string step : {"Write", "Read"}) {
    const std::string log = (dir / ("mpi-" + step + ".log")).string();
    const pid_t pid = spawn({BFM_MPIEXEC, "-np", step == "Write" ? "2" : "4", "--oversubscribe", BFM_CKPT_MPI_TESTS,
                             "--gtest_color=no", "--gtest_filter=TrainCheckpointReshardMpi." + step},
                            {"BFM_RESHARD_DIR=" + dir.string()}, log);
    ASSERT_GT(pid, 0);
    int status = 0;
    waitpid(pid, &status, 0);
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << step << " under mpirun failed:\n" << ss.str();
    ASSERT_THAT(ss.str(), HasSubstr("[  PASSED  ] 1 test")) << ss.str();
  }
  const ParamLayout layout(config());
  const std::string path = bfm::runtime::latest_train_checkpoint(dir.string());
  ASSERT_EQ(path, (dir / "ckpt-00000077.h5").string());
  read_and_check(path, layout, 6, state(77), 2);
  read_and_check(path, layout, 6, state(77), 2, Range{0, layout.total()});
  fs::remove_all(dir);
#endif
}

#ifdef BFM_TEST_MPI_MAIN
// The MPI side of TrainCheckpointReshard (skipped unless BFM_RESHARD_DIR is set).
TEST(TrainCheckpointReshardMpi, Write) {
  const char* dir = std::getenv("BFM_RESHARD_DIR");
  if (!dir) GTEST_SKIP() << "run by TrainCheckpointReshard";
  ASSERT_EQ(ranks(), 2);
  const ParamLayout layout(config());
  Arenas a(layout, 6, shard(0, layout.total()));
  bfm::runtime::write_train_checkpoint(dir, a.tensors, state(77, rank() == 0), 2);
}
TEST(TrainCheckpointReshardMpi, Read) {
  const char* dir = std::getenv("BFM_RESHARD_DIR");
  if (!dir) GTEST_SKIP() << "run by TrainCheckpointReshard";
  ASSERT_EQ(ranks(), 4);
  const ParamLayout layout(config());
  for (int split : {1, 2}) {
    SCOPED_TRACE("split " + std::to_string(split));
    read_and_check(bfm::runtime::latest_train_checkpoint(dir), layout, 6, state(77), 2, shard(split, layout.total()));
  }
}
#endif

// Write and read speed of a 100M-parameter checkpoint (params + m + v = 1.2 GB): run by hand with
// --gtest_also_run_disabled_tests --gtest_filter='*Speed*', BFM_CKPT_BENCH_DIR naming a folder on the disk to measure.
TEST(TrainCheckpointBench, DISABLED_Speed100M) {
  ModelConfig c;
  c.n_parcels = 400, c.window = 40, c.patch_len = 4, c.d_model = 1024, c.n_heads = 16, c.n_layers = 8;
  c.causal = true;
  const ParamLayout layout(c);
  const char* env = std::getenv("BFM_CKPT_BENCH_DIR");
  const std::string dir = from_rank0(std::string(env ? env : "/tmp") + "/bfm-ckpt-bench-" + std::to_string(::getpid()));
  const int64_t A = layout.total();
  Arenas a(layout, 1, shard(0, A));  // ZeRO-1 moments
  Arenas full(layout, 1);
  const double gb = 3.0 * 4.0 * static_cast<double>(A) / 1e9;
  if (rank() == 0) fs::create_directories(dir);
  for (int sharded = 0; sharded < 2; ++sharded)
    for (int rep = 0; rep < 2; ++rep) {
      // The baseline under the same conditions: the same bytes from the same memory, written by this rank alone with
      // plain write() in 16 MiB pieces and fsynced (what dd bs=16M conv=fsync does).
      barrier();
      if (rank() == 0) {
        const auto t0 = std::chrono::steady_clock::now();
        const std::string raw = dir + "/raw.bin";
        const int fd = ::open(raw.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        for (const auto* arena : {&full.params, &full.m, &full.v})
          for (size_t at = 0; at < arena->size(); at += size_t{1} << 22) {
            const size_t n = std::min(arena->size() - at, size_t{1} << 22) * 4;
            ASSERT_EQ(::write(fd, arena->data() + at, n), static_cast<ssize_t>(n));
          }
        ::fsync(fd);
        ::close(fd);
        const double w = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        fs::remove(raw);
        std::printf("baseline: write() + fsync of the same %.2f GB: %.2f s (%.2f GB/s)\n", gb, w, gb / w);
      }
      barrier();
      const auto t0 = std::chrono::steady_clock::now();
      const std::string path = bfm::runtime::write_train_checkpoint(
          dir, sharded ? a.tensors : full.tensors, state(rep + 2 * sharded), 1);
      const double w = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      barrier();
      const auto t1 = std::chrono::steady_clock::now();
      bfm::runtime::read_train_checkpoint(path, sharded ? a.tensors : full.tensors);
      const double r = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
      if (rank() == 0)
        std::printf("%lld params, %d rank(s), moments %s: %.2f GB written in %.2f s (%.2f GB/s), read in %.2f s\n",
                    static_cast<long long>(A), ranks(), sharded ? "sharded" : "replicated", gb, w, gb / w, r);
    }
  barrier();
  if (rank() == 0) fs::remove_all(dir);
}

}  // namespace

#ifdef BFM_TEST_MPI_MAIN
int main(int argc, char** argv) { return bfm::test::run_mpi_tests(argc, argv); }
#endif
