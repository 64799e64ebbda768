// runtime/safetensors against an independent reader and writer: a byte-level parser and writer in Python (struct +
// json + numpy, Debian's /usr/bin/python3), and malformed files assembled byte by byte here for every error path.
#include "runtime/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "tests/common/test_files.h"

namespace {

namespace fs = std::filesystem;
using bfm::runtime::read_safetensors;
using bfm::runtime::TensorRef;
using bfm::runtime::write_safetensors;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A fresh folder per test under /tmp, removed afterwards.
class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = bfm::test::make_temp_dir(std::string(info->test_suite_name()) + "-" + info->name());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Runs a Python snippet with Debian's python3 (which has numpy); returns its exit code, output in `output`.
  int python(const std::string& code, const std::string& args, std::string& output) const {
    return bfm::test::run_python(dir_, code, args, output);
  }

  fs::path dir_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// An independent byte-level writer: 8-byte little-endian length (`declared_len`, or the real one), header, data.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               int64_t declared_len = -1) {
  const uint64_t n = declared_len >= 0 ? static_cast<uint64_t>(declared_len) : header.size();
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

// Value i of tensor k in the tests: exactly representable in float32, and computed alike in Python.
float value(int k, int i) { return static_cast<float>(k * 100) + static_cast<float>(i) * 0.25f - 1.0f; }

std::vector<float> values(int k, int n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = value(k, i);
  return v;
}

// What read_safetensors throws for `path`, or "" when it does not throw.
std::string read_error(const std::string& path) {
  try {
    read_safetensors(path);
  } catch (const bfm::Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(Safetensors, WrittenFileParsesWithIndependentPythonReader) {
  const std::string path = file("model.safetensors");
  const auto w = values(0, 12), s = values(1, 1), b = values(2, 5);
  write_safetensors(path,
                    {{"patch_embed.weight", {4, 3}, w.data()},
                     {"logit_scale", {}, s.data()},
                     {"blocks.0.ln1.bias", {5}, b.data()},
                     {"empty", {0, 3}, nullptr}},
                    {{"format", "pt"}, {"note", "r\xc3\xa9sum\xc3\xa9"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const std::string code = R"PY(
import json, struct, sys
import numpy as np
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
assert (8 + n) % 8 == 0, n
text = raw[8:8 + n].decode("utf-8")
assert text.rstrip(" ").endswith("}"), "padding is not spaces"
h = json.loads(text)
assert h.pop("__metadata__") == {"format": "pt", "note": "r\u00e9sum\u00e9"}, "metadata"
expect = [("patch_embed.weight", [4, 3]), ("logit_scale", []), ("blocks.0.ln1.bias", [5]), ("empty", [0, 3])]
by_offset = sorted(h.items(), key=lambda kv: kv[1]["data_offsets"])
assert [k for k, _ in by_offset] == ["patch_embed.weight", "logit_scale", "blocks.0.ln1.bias", "empty"], by_offset
data = raw[8 + n:]
pos = 0
for k, (name, shape) in enumerate(expect):
    e = h[name]
    assert e["dtype"] == "F32" and e["shape"] == shape, (name, e)
    begin, end = e["data_offsets"]
    count = int(np.prod(shape)) if shape else 1
    assert begin == pos and end == begin + 4 * count, (name, e)
    got = np.frombuffer(data[begin:end], dtype="<f4")
    want = np.array([k * 100 + i * 0.25 - 1 for i in range(count)], dtype=np.float32)
    assert np.array_equal(got, want), (name, got, want)
    pos = end
assert pos == len(data), (pos, len(data))
print("ok")
)PY";
  std::string out;
  ASSERT_EQ(python(code, path, out), 0) << out;
  EXPECT_THAT(out, HasSubstr("ok"));
}

TEST_F(Safetensors, ReadsFileFromIndependentPythonWriter) {
  // Keys in an order unlike their offsets, metadata last, no padding (the header need not be a multiple of 8).
  const std::string path = file("from_python.safetensors");
  const std::string code = R"PY(
import json, struct, sys
tensors = [("b.weight", [2, 3], 1), ("a.bias", [4], 0), ("scale", [], 2), ("none", [0], 3)]
data, header = b"", {}
for name, shape, k in tensors:
    count = 1
    for d in shape:
        count *= d
    chunk = b"".join(struct.pack("<f", k * 100 + i * 0.25 - 1) for i in range(count))
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(chunk)]}
    data += chunk
header = dict(sorted(header.items()))
header["__metadata__"] = {"step": "7"}
text = json.dumps(header).encode()
if len(text) % 8 == 0:
    text += b"\t"  # JSON whitespace other than a space, so that the length is not a multiple of 8
open(sys.argv[1], "wb").write(struct.pack("<Q", len(text)) + text + data)
)PY";
  std::string out;
  ASSERT_EQ(python(code, path, out), 0) << out;
  const auto got = read_safetensors(path);
  ASSERT_EQ(got.tensors.size(), 4u);
  EXPECT_EQ(got.metadata, (std::map<std::string, std::string>{{"step", "7"}}));
  const auto& a = got.tensors.at("a.bias");
  const auto& b = got.tensors.at("b.weight");
  const auto& scale = got.tensors.at("scale");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(a.data, values(0, 4));
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b.data, values(1, 6));
  EXPECT_TRUE(scale.shape.empty());
  EXPECT_EQ(scale.data, values(2, 1));
  EXPECT_EQ(got.tensors.at("none").shape, (std::vector<int64_t>{0}));
  EXPECT_TRUE(got.tensors.at("none").data.empty());
}

TEST_F(Safetensors, RoundTripIsBitExact) {
  const std::string path = file("rt.safetensors");
  uint32_t nan_bits = 0x7fc12345u;
  float payload_nan;
  std::memcpy(&payload_nan, &nan_bits, 4);
  const std::vector<float> special = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                                      -std::numeric_limits<float>::infinity(), payload_nan,
                                      std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max()};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> big(3 * 5 * 7);
  for (float& v : big) v = normal(rng);
  write_safetensors(path, {{"special", {7}, special.data()}, {"big", {3, 5, 7}, big.data()}});
  const auto got = read_safetensors(path);
  EXPECT_TRUE(got.metadata.empty());
  ASSERT_EQ(got.tensors.at("special").data.size(), special.size());
  EXPECT_EQ(std::memcmp(got.tensors.at("special").data.data(), special.data(), special.size() * 4), 0);
  EXPECT_EQ(got.tensors.at("big").shape, (std::vector<int64_t>{3, 5, 7}));
  EXPECT_EQ(std::memcmp(got.tensors.at("big").data.data(), big.data(), big.size() * 4), 0);
}

TEST_F(Safetensors, MissingFileNamesThePath) {
  const std::string path = file("nope.safetensors");
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("No such file")));
}

TEST_F(Safetensors, FileShorterThanTheLengthField) {
  const std::string path = file("tiny.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("truncated")));
}

TEST_F(Safetensors, HeaderLengthLargerThanTheFile) {
  const std::string path = file("long_header.safetensors");
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'), 1000);
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("truncated"), HasSubstr("1000")));
}

TEST_F(Safetensors, TruncatedHeader) {
  // The length is right but the file ends inside the JSON.
  const std::string path = file("cut_header.safetensors");
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  write_raw(path, header.substr(0, 20), "", static_cast<int64_t>(header.size()));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("truncated")));
}

TEST_F(Safetensors, TruncatedData) {
  const std::string path = file("cut_data.safetensors");
  write_raw(path, R"({"w":{"dtype":"F32","shape":[2,6],"data_offsets":[0,48]}})", std::string(40, '\0'));
  EXPECT_THAT(read_error(path),
              AllOf(HasSubstr(path), HasSubstr("truncated: header says 48 bytes of data, file has 40")));
}

TEST_F(Safetensors, InvalidJson) {
  const std::string path = file("bad_json.safetensors");
  write_raw(path, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", std::string(4, '\0'));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("not valid JSON")));
  write_raw(path, "[1, 2, 3]", "");
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("not a JSON object")));
}

TEST_F(Safetensors, RejectsDtypesOtherThanF32NamingTheTensor) {
  const std::string path = file("dtype.safetensors");
  for (const auto& [dtype, bytes] : std::vector<std::pair<std::string, int>>{{"F16", 2}, {"BF16", 2}, {"I64", 8}}) {
    const std::string header = R"({"blocks.0.ln1.weight":{"dtype":")" + dtype + R"(","shape":[3],"data_offsets":[0,)" +
                               std::to_string(3 * bytes) + "]}}";
    write_raw(path, header, std::string(static_cast<size_t>(3 * bytes), '\0'));
    EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("'blocks.0.ln1.weight'"),
                                        HasSubstr("dtype " + dtype), HasSubstr("F32 only")));
  }
}

TEST_F(Safetensors, OverlappingOffsets) {
  const std::string path = file("overlap.safetensors");
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
            std::string(24, '\0'));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("overlaps"), HasSubstr("'a'"), HasSubstr("'b'")));
}

TEST_F(Safetensors, GapBetweenTensors) {
  const std::string path = file("gap.safetensors");
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("b":{"dtype":"F32","shape":[4],"data_offsets":[20,36]}})",
            std::string(36, '\0'));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("gap"), HasSubstr("'b'")));
  // A first tensor that does not start at 0 is a gap too.
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("gap"), HasSubstr("'a'")));
}

TEST_F(Safetensors, BytesAfterTheLastTensor) {
  const std::string path = file("trailing.safetensors");
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(12, '\0'));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("8 bytes after the last tensor")));
}

TEST_F(Safetensors, ShapeDisagreesWithByteRange) {
  const std::string path = file("shape.safetensors");
  write_raw(path, R"({"decoder.head.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})",
            std::string(16, '\0'));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("'decoder.head.weight'"), HasSubstr("[2, 3]"),
                                      HasSubstr("24 bytes"), HasSubstr("span 16 bytes")));
}

TEST_F(Safetensors, MalformedHeaderEntries) {
  const std::string path = file("entries.safetensors");
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1]}})", "");
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("'a'"), HasSubstr("data_offsets")));
  write_raw(path, R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("'a'"), HasSubstr("-1")));
  write_raw(path, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", std::string(4, '\0'));
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("'a'"), HasSubstr("end before")));
  write_raw(path, R"({"__metadata__":{"step":7}})", "");
  EXPECT_THAT(read_error(path), AllOf(HasSubstr(path), HasSubstr("__metadata__"), HasSubstr("step")));
}

TEST_F(Safetensors, OverwritesAtomicallyAndLeavesNoTmp) {
  const std::string path = file("model.safetensors");
  const auto v1 = values(1, 3), v2 = values(2, 5);
  write_safetensors(path, {{"x", {3}, v1.data()}});
  write_safetensors(path, {{"y", {5}, v2.data()}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const auto got = read_safetensors(path);
  ASSERT_EQ(got.tensors.size(), 1u);
  EXPECT_EQ(got.tensors.at("y").data, v2);
}

TEST_F(Safetensors, WriteIntoMissingDirectoryFailsCleanly) {
  const std::string path = file("no/such/dir/model.safetensors");
  const auto v = values(0, 2);
  try {
    write_safetensors(path, {{"x", {2}, v.data()}});
    FAIL() << "no error";
  } catch (const bfm::Error& e) {
    EXPECT_THAT(std::string(e.what()), AllOf(HasSubstr(path), HasSubstr("No such file")));
  }
  EXPECT_FALSE(fs::exists(file("no")));
}

TEST_F(Safetensors, FailedWriteKeepsTheExistingFileIntact) {
  // A write that fails half-way (here: the file-size limit, as a full disk would) must leave the old file whole.
  const std::string path = file("model.safetensors");
  const auto old_values = values(3, 16);
  write_safetensors(path, {{"x", {16}, old_values.data()}});
  const std::string before = slurp(path);

  const std::vector<float> big(1 << 20, 1.0f);  // 4 MiB, over the limit below
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit small = saved;
  small.rlim_cur = 64 * 1024;
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG instead of killing us
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string error;
  try {
    write_safetensors(path, {{"x", {1 << 20}, big.data()}});
  } catch (const bfm::Error& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);

  EXPECT_THAT(error, AllOf(HasSubstr(path + ".tmp"), HasSubstr("write failed")));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(slurp(path), before);
  EXPECT_EQ(read_safetensors(path).tensors.at("x").data, old_values);
}

TEST_F(Safetensors, WriterRejectsBadTensorsBeforeTouchingTheFile) {
  const std::string path = file("model.safetensors");
  const auto v = values(0, 4);
  auto write_error = [&](const std::vector<TensorRef>& tensors) -> std::string {
    try {
      write_safetensors(path, tensors);
    } catch (const bfm::Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_THAT(write_error({{"w", {4}, v.data()}, {"w", {4}, v.data()}}),
              AllOf(HasSubstr(path), HasSubstr("'w'"), HasSubstr("twice")));
  EXPECT_THAT(write_error({{"__metadata__", {4}, v.data()}}), AllOf(HasSubstr(path), HasSubstr("__metadata__")));
  EXPECT_THAT(write_error({{"neg", {2, -2}, v.data()}}), AllOf(HasSubstr(path), HasSubstr("'neg'")));
  EXPECT_THAT(write_error({{"null", {4}, nullptr}}), AllOf(HasSubstr(path), HasSubstr("'null'")));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

}  // namespace
