// metrics.jsonl (launch/train/metrics.h): what MetricsLog writes, read_metrics reads back, checked against values
// written here; a line still being written is skipped, a damaged one named by file and line.
#include "launch/train/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "base/error.h"
#include "tests/common/test_files.h"

namespace {

using bfm::launch::MetricsLog;
using bfm::launch::read_metrics;
using ::testing::HasSubstr;

std::string error_of(const std::string& text) {
  std::istringstream in(text);
  try {
    read_metrics(in, "m.jsonl");
  } catch (const bfm::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Metrics, WrittenLinesReadBackWithTheRestoredOnesFirst) {
  const std::filesystem::path dir = bfm::test::make_temp_dir("metrics");
  const std::string path = (dir / "metrics.jsonl").string();
  const std::string restored = "{\"split\":\"train\",\"step\":1,\"loss\":2.5}\n";
  {
    MetricsLog log(path, restored);
    log.append({{"split", "train"}, {"step", 2}, {"loss", 2.0}, {"lr", 1e-3},
                {"grad_norm", std::numeric_limits<double>::quiet_NaN()}});
    log.append({{"split", "validation"}, {"step", 2}, {"loss", 2.25}});
    log.append({{"split", "train"}, {"step", 2}, {"loss", 1.75}});  // a resumed run repeats step 2: replaces it
    EXPECT_EQ(log.text().rfind(restored, 0), 0u);
    std::ifstream f(path);
    const std::string on_disk((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_EQ(on_disk, log.text());
  }
  std::ifstream f(path);
  auto splits = read_metrics(f, path);
  const auto& train = splits.at("train");
  EXPECT_EQ(train.lines, 3u);
  EXPECT_EQ(train.values.at("loss").at(1), 2.5);
  EXPECT_EQ(train.values.at("loss").at(2), 1.75);
  EXPECT_EQ(train.values.at("lr").at(2), 1e-3);
  EXPECT_TRUE(std::isnan(train.values.at("grad_norm").at(2)));  // written as null
  EXPECT_EQ(splits.at("validation").values.at("loss").at(2), 2.25);
  EXPECT_EQ(bfm::launch::last_metrics_line(MetricsLog("", restored + "{\"split\":\"train\",\"step\":7}\n").text(),
                                           "train")["step"],
            7);
  EXPECT_TRUE(bfm::launch::last_metrics_line(restored, "validation").is_null());
  std::filesystem::remove_all(dir);
}

TEST(Metrics, ALineStillBeingWrittenIsSkippedADamagedOneIsNamed) {
  const std::string good = "{\"split\":\"train\",\"step\":1,\"loss\":2.5}\n";
  std::istringstream partial(good + "{\"split\":\"train\",\"st");
  EXPECT_EQ(read_metrics(partial, "m.jsonl").at("train").lines, 1u);
  EXPECT_THAT(error_of(good + "{\"split\":\"tr#\n" + good), HasSubstr("m.jsonl:2: not a JSON line"));
  EXPECT_THAT(error_of(good + "[1, 2]\n"), HasSubstr("m.jsonl:2: expected a JSON object"));
  EXPECT_THAT(error_of(good + "{\"step\":3}\n"), HasSubstr("m.jsonl:2: no \"split\" string"));
  EXPECT_THAT(error_of("{\"split\":\"validation\",\"step\":1}\n"), HasSubstr("no training lines"));
}

}  // namespace
