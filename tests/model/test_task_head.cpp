// The task head's files (model/task_head.h: task_head.safetensors + task.json): what is written reads back bit for
// bit, and a damaged or mismatched file is an error naming it.
#include "model/task_head.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "runtime/safetensors.h"
#include "tests/common/test_files.h"

namespace {

namespace fs = std::filesystem;
using bfm::model::TaskHead;
using ::testing::HasSubstr;

void write_files(const fs::path& dir, const TaskHead& head) {
  fs::create_directories(dir);
  for (const auto& [name, bytes] : bfm::model::task_head_files(head, {{"steps", 12}}))
    std::ofstream(dir / name, std::ios::binary) << bytes;
}

std::string error_of(const fs::path& dir, int d_model) {
  try {
    bfm::model::load_task_head(dir.string(), d_model);
  } catch (const bfm::Error& e) {
    return e.what();
  }
  return "";
}

TEST(TaskHeadFiles, RoundTripKeepsEveryValue) {
  const fs::path dir = bfm::test::make_temp_dir("task_head");
  TaskHead head("embedding", false, 3, 5);
  head.initialize(4);
  for (int o = 0; o < 3; ++o) head.params()[15 + o] = 0.25f * float(o + 1);  // the bias
  head.target_mean = {1.0f, -2.0f, 0.5f};
  head.target_scale = {2.0f, 1.0f, 4.0f};
  write_files(dir, head);
  const TaskHead back = bfm::model::load_task_head(dir.string(), 5);
  EXPECT_EQ(back.task(), "embedding");
  EXPECT_FALSE(back.classification());
  ASSERT_EQ(back.size(), head.size());
  for (int64_t i = 0; i < head.size(); ++i) EXPECT_EQ(back.weight()[i], head.weight()[i]) << i;
  EXPECT_EQ(back.target_mean, head.target_mean);
  EXPECT_EQ(back.target_scale, head.target_scale);
  // The safetensors file holds what the format says, read by the generic reader.
  const auto st = bfm::runtime::read_safetensors((dir / "task_head.safetensors").string());
  EXPECT_EQ(st.tensors.at("task_head.weight").shape, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(st.tensors.at("task_head.bias").data, (std::vector<float>{0.25f, 0.5f, 0.75f}));
  fs::remove_all(dir);
}

TEST(TaskHeadFiles, MismatchedOrDamagedFilesAreNamed) {
  const fs::path dir = bfm::test::make_temp_dir("task_head_bad");
  TaskHead head("category", true, 4, 6);
  head.initialize(1);
  write_files(dir, head);
  EXPECT_THAT(error_of(dir, 8), AllOf(HasSubstr("task_head.safetensors"), HasSubstr("task_head.weight"),
                                      HasSubstr("[4, 8]")));  // a head for another model width
  float nan = std::nanf("");
  bfm::runtime::write_safetensors((dir / "task_head.safetensors").string(),
                                  {{"task_head.weight", {4, 6}, std::vector<float>(24, nan).data()},
                                   {"task_head.bias", {4}, head.bias()}});
  EXPECT_THAT(error_of(dir, 6), HasSubstr("non-finite"));
  std::ofstream(dir / "task.json") << "{\"format\": \"bfm-task-head\", \"task\": ";
  EXPECT_THAT(error_of(dir, 6), AllOf(HasSubstr("task.json"), HasSubstr("not valid JSON")));
  fs::remove(dir / "task.json");
  EXPECT_THAT(error_of(dir, 6), AllOf(HasSubstr("task.json"), HasSubstr("missing")));
  fs::remove_all(dir);
}

}  // namespace
