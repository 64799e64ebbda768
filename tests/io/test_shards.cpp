// The shard writer and reader against h5py (Debian's /usr/bin/python3): shards we write are opened and checked by
// h5py against the same values dumped as raw float32; a shard h5py writes by following docs/FORMAT.md is read by us;
// a flipped byte inside a chunk, a truncated file and a wrong format_version give errors that name the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/corpus_manifest.h"
#include "io/half.h"
#include "io/shard_reader.h"
#include "io/shard_writer.h"
#include "base/error.h"
#include "base/rng.h"
#include "tests/io/shard_test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace bfm::io;
using ::testing::AllOf;
using ::testing::HasSubstr;

class Shards : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = bfm::test::make_temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name()); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  int python(const std::string& code, const std::string& args, std::string& out) const {
    return bfm::test::run_python(dir_, code, args, out);
  }

  // Three runs (one longer than two chunks), 7 parcels, a 4-d stimulus embedding on run 1 only, labels on run 1.
  // Writes the shard and, for the independent check, every row as raw float32 (ts.bin, stim.bin) and int32 labels.
  std::string write_fixture(Storage storage) {
    const int64_t P = 7, S = 4;
    const std::vector<int64_t> lengths = {300, 70, 513};
    ShardHeader h;
    h.n_parcels = P;
    h.atlas = "TestAtlas7";
    for (int p = 0; p < P; ++p) h.parcel_labels.push_back("net" + std::to_string(p % 3) + "_parcel" + std::to_string(p));
    for (int p = 0; p < 3 * P; ++p) h.parcel_coords.push_back(0.5f * static_cast<float>(p) - 3.0f);
    h.storage = storage;
    h.stimulus_dim = S;
    h.labels = true;
    h.score_names = {"fluid_iq", "anxiety"};
    h.converter = "bfm test";
    h.preprocessing = "none (random values)";
    const std::string path = file("shard-00000.h5");
    ShardWriter w(path, h);
    w.add_subject(Subject{"studyA/sub-01", 31.5f, "F", "control", {101.0f, NAN}});
    w.add_subject(Subject{"studyB/sub-07", NAN, "", "MDD", {}});
    bfm::Rng rng(42);
    std::vector<float> all_ts, all_stim;
    std::vector<int32_t> all_labels;
    for (size_t r = 0; r < lengths.size(); ++r) {
      const int64_t n = lengths[r];
      std::vector<float> ts(static_cast<size_t>(n * P)), stim(static_cast<size_t>(n * S));
      std::vector<int32_t> labels(static_cast<size_t>(n));
      for (auto& v : ts) v = static_cast<float>(3.0 * rng.normal());
      if (r == 0) {  // float16 edge cases: ties to even (normal and subnormal), overflow, underflow, signed zero
        const float edges[] = {1.0f + 0x1.0p-11f, 1.0f + 0x3.0p-11f, -(2.0f + 0x1.0p-10f), 0x1.0p-25f, 0x3.0p-25f,
                               0x1.8p-24f, 0x1.4p-24f, 0x1.0p-14f - 0x1.0p-25f, 65504.0f, 65519.0f, 65520.0f, 1e5f,
                               -65520.0f, 6e-8f, 1e-10f, -0.0f, INFINITY, -INFINITY, 0x1.ffep-15f, 1024.5f, 2049.0f};
        std::copy(std::begin(edges), std::end(edges), ts.begin());
      }
      for (auto& v : stim) v = static_cast<float>(rng.uniform());
      for (auto& v : labels) v = static_cast<int32_t>(rng.below(27));
      RunView run;
      run.meta = bfm::io::Run{r == 1 ? "studyB/sub-07" : (r == 0 ? "studyA/sub-01" : "studyC/sub-99"),
                     "ses-" + std::to_string(r), r == 1 ? "studyB" : "studyA", r == 1 ? "emotion" : "rest",
                     "site" + std::to_string(r), "/data/run" + std::to_string(r) + ".nii.gz", 0.72 + 0.5 * r, n, 0};
      run.timeseries = ts.data();
      if (r == 1) {
        run.stim_embedding = stim.data();
        run.labels = labels.data();
      } else {
        std::fill(stim.begin(), stim.end(), 0.0f);
        std::fill(labels.begin(), labels.end(), -1);
      }
      w.add_run(run);
      all_ts.insert(all_ts.end(), ts.begin(), ts.end());
      all_stim.insert(all_stim.end(), stim.begin(), stim.end());
      all_labels.insert(all_labels.end(), labels.begin(), labels.end());
    }
    EXPECT_TRUE(fs::exists(path + ".tmp"));
    EXPECT_FALSE(fs::exists(path));
    w.commit();
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    bfm::test::write_raw(dir_ / "ts.bin", all_ts);
    bfm::test::write_raw(dir_ / "stim.bin", all_stim);
    bfm::test::write_raw(dir_ / "labels.bin", all_labels);
    return path;
  }

  fs::path dir_;
};

// h5py opens our shard and checks every value and every table against what we meant to write.
constexpr const char* kCheckWithH5py = R"PY(
import sys, os, h5py, numpy as np
path, storage = sys.argv[1], sys.argv[2]
d = os.path.dirname(path)
ts = np.fromfile(os.path.join(d, "ts.bin"), np.float32).reshape(-1, 7)
stim = np.fromfile(os.path.join(d, "stim.bin"), np.float32).reshape(-1, 4)
lab = np.fromfile(os.path.join(d, "labels.bin"), np.int32)
def s(x): return x.decode() if isinstance(x, bytes) else str(x)
with h5py.File(path, "r") as f:
    a = f.attrs
    assert s(a["format"]) == "bfm-shard" and int(a["format_version"]) == 1, dict(a)
    assert int(a["n_parcels"]) == 7 and int(a["n_runs"]) == 3 and int(a["n_timepoints"]) == 883, dict(a)
    assert int(a["n_subjects"]) == 3 and s(a["atlas"]) == "TestAtlas7" and s(a["converter"]) == "bfm test"
    x = f["runs/timeseries"]
    assert x.shape == (883, 7) and x.chunks == (256, 7) and x.fletcher32, (x.shape, x.chunks)
    if storage == "f16":
        assert x.dtype == np.float16, x.dtype
        got = x[...]
        want = ts.astype(np.float16)  # numpy's rounding is the reference for ours
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16)), np.argwhere(got != want)[:5]
        want.astype(np.float32).tofile(os.path.join(d, "ts_f16.bin"))
    else:
        assert x.dtype == np.float32 and np.array_equal(x[...], ts)
    assert np.array_equal(f["runs/stim_embedding"][...], stim) and f["runs/stim_embedding"].fletcher32
    assert np.array_equal(f["runs/label"][...], lab)
    assert list(f["runs/offset"][...]) == [0, 300, 370] and list(f["runs/length"][...]) == [300, 70, 513]
    assert np.allclose(f["runs/tr"][...], [0.72, 1.22, 1.72])
    ids = [s(v) for v in f["subjects/id"][...]]
    assert ids == ["studyA/sub-01", "studyB/sub-07", "studyC/sub-99"], ids
    assert [ids[i] for i in f["runs/subject"][...]] == ["studyA/sub-01", "studyB/sub-07", "studyC/sub-99"]
    assert [s(v) for v in f["runs/task"][...]] == ["rest", "emotion", "rest"]
    assert [s(v) for v in f["runs/study"][...]] == ["studyA", "studyB", "studyA"]
    assert [s(v) for v in f["runs/session"][...]] == ["ses-0", "ses-1", "ses-2"]
    assert [s(v) for v in f["runs/site"][...]] == ["site0", "site1", "site2"]
    assert s(f["runs/source"][2]) == "/data/run2.nii.gz"
    age = f["subjects/age"][...]
    assert age[0] == np.float32(31.5) and np.isnan(age[1]) and np.isnan(age[2])
    assert [s(v) for v in f["subjects/sex"][...]] == ["F", "", ""]
    assert [s(v) for v in f["subjects/diagnosis"][...]] == ["control", "MDD", ""]
    sc = f["subjects/scores"][...]
    assert sc.shape == (3, 2) and sc[0, 0] == 101 and np.isnan(sc[0, 1]) and np.isnan(sc[1:]).all()
    assert [s(v) for v in f["subjects/score_names"][...]] == ["fluid_iq", "anxiety"]
    assert s(f["parcels/labels"][3]) == "net0_parcel3" and f["parcels/coords"].shape == (7, 3)
    assert f["parcels/coords"][2, 1] == np.float32(0.5 * 7 - 3)
print("OK")
)PY";

TEST_F(Shards, Float32ShardReadByH5py) {
  const std::string path = write_fixture(Storage::float32);
  std::string out;
  ASSERT_EQ(python(kCheckWithH5py, path + " f32", out), 0) << out;
}

TEST_F(Shards, Float16ShardMatchesNumpyRounding) {
  const std::string path = write_fixture(Storage::float16);
  std::string out;
  ASSERT_EQ(python(kCheckWithH5py, path + " f16", out), 0) << out;
  // Our reader widens the stored halves exactly as numpy does.
  const auto want = bfm::test::read_raw<float>(dir_ / "ts_f16.bin");
  ShardReader reader(path);
  EXPECT_EQ(reader.header().storage, Storage::float16);
  const auto got = reader.read_window(2, 0, 513);
  ASSERT_EQ(got.size(), 513u * 7);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[370 * 7 + i]) << i;
}

TEST_F(Shards, ReaderGivesBackWhatWasWritten) {
  const std::string path = write_fixture(Storage::float32);
  const auto ts = bfm::test::read_raw<float>(dir_ / "ts.bin");
  const auto stim = bfm::test::read_raw<float>(dir_ / "stim.bin");
  const auto lab = bfm::test::read_raw<int32_t>(dir_ / "labels.bin");
  ShardReader reader(path);
  ASSERT_EQ(reader.runs().size(), 3u);
  EXPECT_EQ(reader.n_parcels(), 7);
  EXPECT_EQ(reader.runs()[2].offset, 370);
  EXPECT_EQ(reader.runs()[1].task, "emotion");
  EXPECT_EQ(reader.subjects()[reader.subject_of(1)].diagnosis, "MDD");
  EXPECT_EQ(reader.header().score_names.size(), 2u);
  // A window across the chunk boundary at row 256 + 370 of run 2.
  const auto w = reader.read_window(2, 200, 100);
  for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(w[i], ts[(370 + 200) * 7 + i]) << i;
  std::vector<float> s(10 * 4);
  std::vector<int32_t> l(10);
  reader.read_stimulus(1, 5, 10, s.data());
  reader.read_labels(1, 5, 10, l.data());
  for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(s[i], stim[(300 + 5) * 4 + i]);
  for (size_t i = 0; i < l.size(); ++i) ASSERT_EQ(l[i], lab[300 + 5 + i]);
  EXPECT_THAT([&] { reader.read_window(1, 60, 11); },
              ::testing::ThrowsMessage<bfm::Error>(AllOf(HasSubstr(path), HasSubstr("run 1"), HasSubstr("outside"))));
}

TEST_F(Shards, ReadsAShardWrittenByH5pyFromTheDocumentedFormat) {
  const std::string path = file("by_h5py.h5");
  const std::string code = R"PY(
import sys, os, h5py, numpy as np
path = sys.argv[1]
rng = np.random.default_rng(3)
lengths = [40, 260]
ts = rng.standard_normal((sum(lengths), 5)).astype(np.float16)
with h5py.File(path, "w") as f:
    f.attrs["format"] = "bfm-shard"          # variable-length strings, as h5py writes a str
    f.attrs["format_version"] = np.int64(1)
    f.attrs["n_parcels"] = 5
    f.attrs["atlas"] = "hand-made"
    f["parcels/labels"] = ["a", "b", "c", "d", "e"]
    f.create_dataset("runs/timeseries", data=ts, chunks=(256, 5), fletcher32=True)
    f["runs/offset"] = np.array([0, 40], np.int64)
    f["runs/length"] = np.array(lengths, np.int32)
    f["runs/subject"] = np.array([1, 0], np.int32)
    f["runs/tr"] = np.array([2.0, 0.8])
    for name, vals in [("session", ["1", "2"]), ("study", ["X", "Y"]), ("task", ["rest", "movie"]), ("site", ["s", "t"])]:
        f["runs/" + name] = vals
    f["subjects/id"] = np.array([b"sub-A", b"sub-B"])   # fixed-length bytes
    f["subjects/age"] = np.array([20.0, np.nan], np.float32)
    f["subjects/sex"] = ["M", ""]
    f["subjects/diagnosis"] = ["", "control"]
ts.astype(np.float32).tofile(os.path.join(os.path.dirname(path), "h5py_ts.bin"))
print("OK")
)PY";
  std::string out;
  ASSERT_EQ(python(code, path, out), 0) << out;
  const auto want = bfm::test::read_raw<float>(dir_ / "h5py_ts.bin");
  ShardReader reader(path);
  ASSERT_EQ(reader.runs().size(), 2u);
  EXPECT_EQ(reader.header().atlas, "hand-made");
  EXPECT_EQ(reader.header().parcel_labels[4], "e");
  EXPECT_EQ(reader.runs()[0].subject, "sub-B");
  EXPECT_EQ(reader.runs()[1].task, "movie");
  EXPECT_DOUBLE_EQ(reader.runs()[0].tr, 2.0);
  EXPECT_EQ(reader.runs()[1].length, 260);
  EXPECT_TRUE(std::isnan(reader.subjects()[1].age));
  EXPECT_EQ(reader.subjects()[0].sex, "M");
  EXPECT_FALSE(reader.header().labels);
  const auto w = reader.read_window(1, 3, 257);
  for (size_t i = 0; i < w.size(); ++i) ASSERT_EQ(w[i], want[(40 + 3) * 5 + i]) << i;
}

TEST_F(Shards, FlippedByteInAChunkIsReportedWithFileAndRun) {
  const std::string path = write_fixture(Storage::float32);
  // Second chunk of /runs/timeseries = rows 256..511 = run 0 rows 256..299, run 1, run 2 rows 0..141.
  const std::string code = R"PY(
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    info = f["runs/timeseries"].id.get_chunk_info_by_coord((256, 0))
    print(info.byte_offset + 100)
)PY";
  std::string out;
  ASSERT_EQ(python(code, path, out), 0) << out;
  const long offset = std::stol(out);
  bfm::test::flip_byte(path, offset);
  ShardReader reader(path);
  EXPECT_NO_THROW(reader.read_window(0, 0, 200));  // the first chunk is intact
  EXPECT_THAT([&] { reader.read_window(1, 0, 10); },
              ::testing::ThrowsMessage<bfm::Error>(AllOf(HasSubstr(path), HasSubstr("run 1"), HasSubstr("corrupt"))));
}

TEST_F(Shards, TruncatedFileIsNamed) {
  const std::string path = write_fixture(Storage::float32);
  fs::resize_file(path, fs::file_size(path) / 2);
  EXPECT_THAT([&] { ShardReader r(path); },
              ::testing::ThrowsMessage<bfm::Error>(AllOf(HasSubstr(path), HasSubstr("not a readable HDF5 file"))));
}

TEST_F(Shards, WrongOrMissingFormatIsNamed) {
  const std::string path = write_fixture(Storage::float32);
  std::string out;
  ASSERT_EQ(python("import sys, h5py\nwith h5py.File(sys.argv[1], 'a') as f: f.attrs['format_version'] = 2\n", path, out), 0)
      << out;
  EXPECT_THAT([&] { ShardReader r(path); }, ::testing::ThrowsMessage<bfm::Error>(
                                                AllOf(HasSubstr(path), HasSubstr("format_version 2"))));
  ASSERT_EQ(python("import sys, h5py\nwith h5py.File(sys.argv[1], 'a') as f: del f.attrs['format']\n", path, out), 0)
      << out;
  EXPECT_THAT([&] { ShardReader r(path); },
              ::testing::ThrowsMessage<bfm::Error>(AllOf(HasSubstr(path), HasSubstr("not a bfm shard"))));
  EXPECT_THAT([&] { ShardReader r(file("absent.h5")); },
              ::testing::ThrowsMessage<bfm::Error>(HasSubstr("absent.h5: no such shard file")));
}

TEST_F(Shards, UncommittedWriterLeavesNothing) {
  const std::string path = file("shard-00001.h5");
  {
    ShardHeader h;
    h.n_parcels = 3;
    ShardWriter w(path, h);
    std::vector<float> ts(30, 1.0f);
    w.add_run(RunView{bfm::io::Run{"s", "", "", "", "", "", 1.0, 10, 0}, ts.data(), nullptr, nullptr});
    EXPECT_THAT([&] { w.add_run(RunView{bfm::io::Run{"s", "", "", "", "", "", 0.0, 10, 0}, ts.data(), nullptr, nullptr}); },
                ::testing::ThrowsMessage<bfm::Error>(AllOf(HasSubstr(path), HasSubstr("TR"))));
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(Shards, ManifestCountsAndSplitFollowTheDocumentedRule) {
  write_fixture(Storage::float32);
  ShardReader reader(file("shard-00000.h5"));
  ShardSummary second{"shard-00001.h5", 2, 100, 0.5, {"studyB/sub-07", "studyD/sub-02"}};
  std::vector<ShardSummary> shards = {summarize(reader), second};
  for (int i = 0; i < 200; ++i) shards[1].subjects.push_back("studyE/sub-" + std::to_string(i));
  write_manifest(dir_.string(), shards, 17, SplitFractions{0.7, 0.2});
  const std::string code = R"PY(
import sys, json
M = (1 << 64) - 1
def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
def fnv(s):
    h = 0xcbf29ce484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001b3) & M
    return h
m = json.load(open(sys.argv[1]))
assert m["format"] == "bfm-corpus" and m["n_shards"] == 2 and m["n_runs"] == 5 and m["n_timepoints"] == 983, m
assert m["n_subjects"] == 204, m["n_subjects"]
hours = (300 * 0.72 + 70 * 1.22 + 513 * 1.72) / 3600 + 0.5
assert abs(m["hours"] - hours) < 1e-9, m["hours"]
sp = m["split"]
seen = set()
for name in ("train", "validation", "test"):
    for sid in sp[name]:
        assert sid not in seen; seen.add(sid)
        u = (mix(fnv(sid) ^ mix(sp["seed"])) >> 11) / 2.0**53
        want = "train" if u < 0.7 else ("validation" if u < 0.9 else "test")
        assert want == name, (sid, name, want)
assert len(seen) == 204 and len(sp["train"]) > 100 and len(sp["test"]) > 0
print("OK")
)PY";
  std::string out;
  ASSERT_EQ(python(code, file("manifest.json"), out), 0) << out;
}

}  // namespace
