// io/h5_arrays against h5py (Debian's /usr/bin/python3): files we write are read and checked by h5py, files h5py
// writes (float16/32/64, int64 masks, numpy bools, strings, chunked) are read by us. None of these tests calls
// MPI_Init, which is the situation of `bfm forward` linked against Debian's parallel HDF5.
#include "io/h5_arrays.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "tests/common/test_files.h"

namespace {

namespace fs = std::filesystem;
using bfm::io::H5ArrayReader;
using bfm::io::H5ArrayWriter;
using ::testing::AllOf;
using ::testing::HasSubstr;

class H5Arrays : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = bfm::test::make_temp_dir(std::string(info->test_suite_name()) + "-" + info->name());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Runs a Python snippet with Debian's python3 (which has h5py and numpy); returns its exit code.
  int python(const std::string& code, const std::string& args, std::string& output) const {
    return bfm::test::run_python(dir_, code, args, output);
  }

  // A file written by h5py with every kind of dataset the reader meets.
  std::string h5py_fixture() const {
    const std::string path = file("from_h5py.h5");
    const std::string code = R"PY(
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "w") as f:
    f["f64"] = (0.1 * np.arange(24, dtype=np.float64)).reshape(2, 3, 4)
    f["f16"] = (np.arange(10) * 0.5 - 3).astype(np.float16)
    f["f32"] = (np.arange(6, dtype=np.float32) * 0.25 - 1).reshape(3, 2)
    f["f64_scalar"] = np.float64(0.1)
    f["mask_i64"] = np.array([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.int64)
    f["mask_bool"] = np.array([[True, False, True], [False, False, True]])
    f["mask_u8"] = np.array([0, 7, 255], dtype=np.uint8)
    f["i8_scalar"] = np.int8(3)
    f.create_dataset("chunked", data=np.arange(100, dtype=np.float32) * 0.5, chunks=(16,), compression="gzip")
    f["g/inner"] = np.ones(3, np.float32)
    f["huge_f64"] = np.array([1.0, 1e300])
    f["neg_i32"] = np.array([[0, 1], [-1, 0]], dtype=np.int32)
    f["big_u16"] = np.array([255, 256], dtype=np.uint16)
    f["big_u64"] = np.array([2**63 + 5], dtype=np.uint64)
    f["text"] = "hello"
    f["empty"] = h5py.Empty("f4")
    f["soft"] = h5py.SoftLink("/nowhere")
)PY";
    std::string out;
    const int rc = python(code, path, out);
    EXPECT_EQ(rc, 0) << out;
    return path;
  }

  fs::path dir_;
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const bfm::Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(H5Arrays, WrittenFileReadsBackInH5py) {
  const std::string path = file("out.h5");
  std::vector<float> enc(2 * 3 * 4), pooled(2 * 4);
  for (size_t i = 0; i < enc.size(); ++i) enc[i] = static_cast<float>(i) * 0.25f - 5.0f;
  for (size_t i = 0; i < pooled.size(); ++i) pooled[i] = static_cast<float>(i) * -1.5f;
  {
    H5ArrayWriter w(path);
    w.write_f32("encoder_out", {2, 3, 4}, enc.data());
    w.write_f32("pooled", {2, 4}, pooled.data());
    w.write_scalar_f32("loss_mae", 0.375f);
    w.write_f32("grads/blocks.0.ln1.weight", {5}, enc.data());
    w.write_f32("empty", {0, 4}, nullptr);
    EXPECT_FALSE(fs::exists(path));  // only the .tmp until commit()
    w.commit();
  }
  EXPECT_TRUE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const std::string code = R"PY(
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    assert sorted(f.keys()) == ["empty", "encoder_out", "grads", "loss_mae", "pooled"], list(f.keys())
    for name in ["encoder_out", "pooled", "loss_mae", "grads/blocks.0.ln1.weight", "empty"]:
        d = f[name]
        assert d.dtype == np.dtype("<f4"), (name, d.dtype)
        assert d.chunks is None, (name, "not contiguous")
    enc = np.arange(24, dtype=np.float32) * np.float32(0.25) - np.float32(5)
    assert f["encoder_out"].shape == (2, 3, 4)
    assert np.array_equal(f["encoder_out"][...], enc.reshape(2, 3, 4))
    assert np.array_equal(f["pooled"][...], (np.arange(8, dtype=np.float32) * np.float32(-1.5)).reshape(2, 4))
    assert np.array_equal(f["grads/blocks.0.ln1.weight"][...], enc[:5])
    loss = f["loss_mae"][()]
    assert f["loss_mae"].shape == () and type(loss) is np.float32 and loss == 0.375, (f["loss_mae"].shape, type(loss))
    assert f["empty"].shape == (0, 4)
print("ok")
)PY";
  std::string out;
  ASSERT_EQ(python(code, path, out), 0) << out;
  EXPECT_THAT(out, HasSubstr("ok"));
}

TEST_F(H5Arrays, ReadsH5pyFloatsOfEveryWidth) {
  const H5ArrayReader r(h5py_fixture());
  const auto f64 = r.read_f32("f64");
  EXPECT_EQ(f64.shape, (std::vector<int64_t>{2, 3, 4}));
  ASSERT_EQ(f64.data.size(), 24u);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(f64.data[static_cast<size_t>(i)], static_cast<float>(0.1 * i)) << i;
  const auto f16 = r.read_f32("f16");
  EXPECT_EQ(f16.shape, (std::vector<int64_t>{10}));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f16.data[static_cast<size_t>(i)], static_cast<float>(i) * 0.5f - 3.0f);
  const auto f32 = r.read_f32("f32");
  EXPECT_EQ(f32.shape, (std::vector<int64_t>{3, 2}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f32.data[static_cast<size_t>(i)], static_cast<float>(i) * 0.25f - 1.0f);
  const auto scalar = r.read_f32("f64_scalar");
  EXPECT_TRUE(scalar.shape.empty());
  EXPECT_EQ(scalar.data, (std::vector<float>{static_cast<float>(0.1)}));
  const auto chunked = r.read_f32("chunked");
  ASSERT_EQ(chunked.data.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(chunked.data[static_cast<size_t>(i)], static_cast<float>(i) * 0.5f);
  EXPECT_EQ(r.read_f32("/g/inner").data, (std::vector<float>{1, 1, 1}));
}

TEST_F(H5Arrays, ReadsH5pyMasksOfEveryIntegerKind) {
  const H5ArrayReader r(h5py_fixture());
  const auto i64 = r.read_u8("mask_i64");
  EXPECT_EQ(i64.shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(i64.data, (std::vector<uint8_t>{0, 1, 1, 0, 1, 0, 0, 1}));
  const auto b = r.read_u8("mask_bool");
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b.data, (std::vector<uint8_t>{1, 0, 1, 0, 0, 1}));
  EXPECT_EQ(r.read_u8("mask_u8").data, (std::vector<uint8_t>{0, 7, 255}));
  const auto s = r.read_u8("i8_scalar");
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.data, (std::vector<uint8_t>{3}));
}

TEST_F(H5Arrays, RejectsWrongTypesAndOutOfRangeValues) {
  const std::string path = h5py_fixture();
  const H5ArrayReader r(path);
  auto expect_error = [&](auto read, const std::string& dataset, const std::string& what) {
    EXPECT_THAT(error_of([&] { read(dataset); }), AllOf(HasSubstr(path), HasSubstr("'" + dataset + "'"),
                                                          HasSubstr(what)));
  };
  auto f32 = [&](const std::string& d) { r.read_f32(d); };
  auto u8 = [&](const std::string& d) { r.read_u8(d); };
  expect_error(u8, "neg_i32", "-1 at [1, 0], out of range 0..255");
  expect_error(u8, "big_u16", "256 at [1], out of range");
  expect_error(u8, "big_u64", "above 2^63");
  expect_error(u8, "f32", "floating-point type");
  expect_error(u8, "text", "string type");
  expect_error(f32, "mask_i64", "integer type");
  expect_error(f32, "mask_bool", "enum type");
  expect_error(f32, "text", "string type");
  expect_error(f32, "huge_f64", "out of float32 range");
  expect_error(f32, "empty", "null dataspace");
  expect_error(f32, "missing", "no dataset");
  expect_error(f32, "g", "no dataset");
  expect_error(u8, "g/missing/deeper", "no dataset");
}

TEST_F(H5Arrays, HasSeesDatasetsOnly) {
  const H5ArrayReader r(h5py_fixture());
  EXPECT_TRUE(r.has("f64"));
  EXPECT_TRUE(r.has("g/inner"));
  EXPECT_TRUE(r.has("/g/inner"));
  EXPECT_FALSE(r.has("g"));  // a group
  EXPECT_FALSE(r.has("soft"));  // a dangling link
  EXPECT_FALSE(r.has("missing"));
  EXPECT_FALSE(r.has("missing/deeper"));
  EXPECT_FALSE(r.has("f64/deeper"));
  EXPECT_FALSE(r.has(""));
}

TEST_F(H5Arrays, MissingOrForeignFileNamesThePath) {
  const std::string missing = file("missing.h5");
  EXPECT_THAT(error_of([&] { H5ArrayReader r(missing); }), AllOf(HasSubstr(missing), HasSubstr("no such file")));
  const std::string text = file("text.h5");
  std::ofstream(text) << "not hdf5 at all\n";
  EXPECT_THAT(error_of([&] { H5ArrayReader r(text); }), AllOf(HasSubstr(text), HasSubstr("not an HDF5 file")));
  EXPECT_THAT(error_of([&] { H5ArrayReader r(dir_.string()); }), HasSubstr(dir_.string()));
}

TEST_F(H5Arrays, UncommittedWriterLeavesNothingAndKeepsTheOldFile) {
  const std::string path = file("out.h5");
  const float one = 1.0f, two = 2.0f;
  {
    H5ArrayWriter w(path);
    w.write_f32("v", {1}, &one);
    w.commit();
  }
  {
    H5ArrayWriter w(path);
    w.write_f32("v", {1}, &two);
    EXPECT_TRUE(fs::exists(path + ".tmp"));
  }  // destroyed without commit(), as when a run throws
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(H5ArrayReader(path).read_f32("v").data, (std::vector<float>{1.0f}));
}

TEST_F(H5Arrays, WriterErrorsNameFileAndDataset) {
  const std::string bad = file("no/such/dir/out.h5");
  EXPECT_THAT(error_of([&] { H5ArrayWriter w(bad); }), AllOf(HasSubstr(bad), HasSubstr("cannot create")));
  EXPECT_FALSE(fs::exists(file("no")));

  const std::string path = file("out.h5");
  const float v = 1.0f;
  H5ArrayWriter w(path);
  w.write_scalar_f32("loss_total", v);
  EXPECT_THAT(error_of([&] { w.write_scalar_f32("loss_total", v); }),
              AllOf(HasSubstr(path), HasSubstr("'loss_total'"), HasSubstr("twice")));
  EXPECT_THAT(error_of([&] { w.write_f32("neg", {2, -1}, &v); }), AllOf(HasSubstr(path), HasSubstr("'neg'")));
  w.commit();
  EXPECT_THAT(error_of([&] { w.write_scalar_f32("late", v); }), AllOf(HasSubstr(path), HasSubstr("after commit")));
  EXPECT_THAT(error_of([&] { w.commit(); }), AllOf(HasSubstr(path), HasSubstr("twice")));
}

// Debian's parallel HDF5 (linked when BFM_WITH_MPI is on) must open and create files with the default driver in a
// process that never called MPI_Init, and must not initialise MPI behind our back.
TEST_F(H5Arrays, WorksWithoutMpiInit) {
#ifdef H5_HAVE_PARALLEL
  RecordProperty("hdf5_build", "parallel");
#else
  RecordProperty("hdf5_build", "serial");
#endif
  const std::string path = file("out.h5");
  const float v = 4.5f;
  {
    H5ArrayWriter w(path);
    w.write_scalar_f32("x", v);
    w.commit();
  }
  EXPECT_EQ(H5ArrayReader(path).read_f32("x").data, (std::vector<float>{4.5f}));
#ifdef H5_HAVE_PARALLEL
  int initialized = 1;
  MPI_Initialized(&initialized);
  EXPECT_EQ(initialized, 0);
#endif
}

}  // namespace
