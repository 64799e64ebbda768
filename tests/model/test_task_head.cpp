// The task head (model/task_head.h): its loss and every gradient (projection, output map, encoder tokens) against
// a float64 loop of the formula and central finite differences; its files (task_head.safetensors + task.json): what
// is written reads back bit for bit, and a damaged, mismatched or older (pooled) file is an error naming it.
#include "model/task_head.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "base/rng.h"
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

std::string error_of(const fs::path& dir, int d_model, int tokens = 4) {
  try {
    bfm::model::load_task_head(dir.string(), d_model, tokens);
  } catch (const bfm::Error& e) {
    return e.what();
  }
  return "";
}

// A head with random projection and output map (the output map is zero after initialize: set here).
TaskHead random_head(bool classification, int O, int D, int N, int C, uint64_t seed) {
  TaskHead h(classification ? "category" : "embedding", classification, O, D, N, C);
  bfm::Rng rng(seed);
  std::vector<float> w(static_cast<size_t>(C * D)), b(static_cast<size_t>(C));
  for (auto& v : w) v = float(rng.normal() / std::sqrt(double(D)));
  for (auto& v : b) v = float(0.1 * rng.normal());
  h.initialize(w, b);
  for (int64_t i = int64_t(C) * D + C; i < h.size(); ++i) h.params()[i] = float(0.3 * rng.normal());
  if (!classification) {
    h.target_mean.assign(size_t(O), 0.5f);
    h.target_scale.assign(size_t(O), 2.0f);
  }
  return h;
}

// The formula in float64, from the parameters and inputs alone.
double reference_loss(const TaskHead& h, const std::vector<float>& x, int B, const std::vector<int32_t>& labels,
                      const std::vector<float>& values, double norm) {
  const int O = h.outputs(), D = h.d_model(), N = h.tokens(), C = h.components();
  double total = 0;
  for (int b = 0; b < B; ++b) {
    std::vector<double> z(static_cast<size_t>(N * C)), out(static_cast<size_t>(O));
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c) {
        double v = h.proj_bias()[c];
        for (int a = 0; a < D; ++a) v += double(h.proj_weight()[c * D + a]) * x[size_t((b * N + n) * D + a)];
        z[size_t(n * C + c)] = v;
      }
    for (int o = 0; o < O; ++o) {
      double v = h.bias()[o];
      for (int k = 0; k < N * C; ++k) v += double(h.weight()[int64_t(o) * N * C + k]) * z[size_t(k)];
      out[size_t(o)] = v;
    }
    if (h.classification()) {
      double m = out[0], s = 0;
      for (double v : out) m = std::max(m, v);
      for (double v : out) s += std::exp(v - m);
      total += -(out[size_t(labels[size_t(b)])] - m - std::log(s));
    } else {
      double s = 0;
      for (int o = 0; o < O; ++o) {
        const double t = (values[size_t(b * O + o)] - h.target_mean[size_t(o)]) / h.target_scale[size_t(o)];
        s += (out[size_t(o)] - t) * (out[size_t(o)] - t);
      }
      total += s / O;
    }
  }
  return total / norm;
}

void check_gradients(bool classification) {
  SCOPED_TRACE(classification ? "cross-entropy" : "mse");
  const int O = 3, D = 5, N = 4, C = 2, B = 3;
  const double norm = 4.0;
  TaskHead h = random_head(classification, O, D, N, C, 2);
  bfm::Rng rng(9);
  std::vector<float> x(static_cast<size_t>(B * N * D)), values(static_cast<size_t>(B * O));
  for (auto& v : x) v = float(rng.normal());
  for (auto& v : values) v = float(rng.normal());
  const std::vector<int32_t> labels = {0, 2, 1};
  std::vector<float> d_x(x.size(), -7.0f);  // overwritten
  const double loss = h.loss(x.data(), B, labels.data(), values.data(), norm, d_x.data());
  EXPECT_NEAR(loss, reference_loss(h, x, B, labels, values, norm), 1e-5);
  const std::vector<float> grads(h.grads(), h.grads() + h.size());
  // Every parameter and every input value against central differences of the float64 reference.
  const double eps = 1e-3;
  for (int64_t i = 0; i < h.size(); ++i) {
    const float saved = h.params()[i];
    h.params()[i] = saved + float(eps);
    const double lp = reference_loss(h, x, B, labels, values, norm);
    h.params()[i] = saved - float(eps);
    const double lm = reference_loss(h, x, B, labels, values, norm);
    h.params()[i] = saved;
    EXPECT_NEAR(grads[size_t(i)], (lp - lm) / (2 * eps), 1e-4) << "parameter " << i;
  }
  for (size_t i = 0; i < x.size(); ++i) {
    const float saved = x[i];
    x[i] = saved + float(eps);
    const double lp = reference_loss(h, x, B, labels, values, norm);
    x[i] = saved - float(eps);
    const double lm = reference_loss(h, x, B, labels, values, norm);
    x[i] = saved;
    EXPECT_NEAR(d_x[i], (lp - lm) / (2 * eps), 1e-4) << "input " << i;
  }
  // A second call accumulates the head's gradient.
  h.loss(x.data(), B, labels.data(), values.data(), norm, d_x.data());
  for (int64_t i = 0; i < h.size(); ++i) EXPECT_NEAR(h.grads()[i], 2 * grads[size_t(i)], 1e-6) << i;
}

TEST(TaskHead, LossAndGradientsMatchTheFormula) {
  check_gradients(true);
  check_gradients(false);
}

TEST(TaskHead, InitializeKeepsTheProjectionAndZeroesTheOutputMap) {
  TaskHead h = random_head(true, 4, 6, 5, 3, 1);
  const std::vector<float> w(h.proj_weight(), h.proj_weight() + 18), b(h.proj_bias(), h.proj_bias() + 3);
  h.initialize(w, b);
  for (int64_t i = 0; i < 4 * 15 + 4; ++i) ASSERT_EQ(h.weight()[i], 0.0f);
  // A zero output map predicts every class alike: the loss is log O.
  std::vector<float> x(static_cast<size_t>(2 * 5 * 6), 1.0f);
  const std::vector<int32_t> labels = {1, 3};
  EXPECT_NEAR(h.loss(x.data(), 2, labels.data(), nullptr, 2.0, nullptr), std::log(4.0), 1e-6);
  EXPECT_THROW(h.initialize(std::vector<float>(17), b), bfm::Error);
}

TEST(TaskHeadFiles, RoundTripKeepsEveryValue) {
  const fs::path dir = bfm::test::make_temp_dir("task_head");
  TaskHead head = random_head(false, 3, 5, 4, 2, 4);
  head.target_mean = {1.0f, -2.0f, 0.5f};
  head.target_scale = {2.0f, 1.0f, 4.0f};
  write_files(dir, head);
  const TaskHead back = bfm::model::load_task_head(dir.string(), 5, 4);
  EXPECT_EQ(back.task(), "embedding");
  EXPECT_FALSE(back.classification());
  EXPECT_EQ(back.components(), 2);
  EXPECT_EQ(back.tokens(), 4);
  ASSERT_EQ(back.size(), head.size());
  for (int64_t i = 0; i < head.size(); ++i) EXPECT_EQ(back.params()[i], head.params()[i]) << i;
  EXPECT_EQ(back.target_mean, head.target_mean);
  EXPECT_EQ(back.target_scale, head.target_scale);
  // The safetensors file holds what the format says, read by the generic reader.
  const auto st = bfm::runtime::read_safetensors((dir / "task_head.safetensors").string());
  EXPECT_EQ(st.tensors.at("task_head.proj.weight").shape, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(st.tensors.at("task_head.proj.bias").shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(st.tensors.at("task_head.weight").shape, (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(st.tensors.at("task_head.bias").data, std::vector<float>(head.bias(), head.bias() + 3));
  fs::remove_all(dir);
}

TEST(TaskHeadFiles, MismatchedOrDamagedFilesAreNamed) {
  const fs::path dir = bfm::test::make_temp_dir("task_head_bad");
  TaskHead head = random_head(true, 4, 6, 4, 2, 1);
  write_files(dir, head);
  EXPECT_THAT(error_of(dir, 8), AllOf(HasSubstr("task_head.safetensors"), HasSubstr("task_head.proj.weight"),
                                      HasSubstr("[2, 8]")));  // a head for another model width
  EXPECT_THAT(error_of(dir, 6, 5), AllOf(HasSubstr("task.json"), HasSubstr("4 tokens"), HasSubstr("has 5")));
  float nan = std::nanf("");
  bfm::runtime::write_safetensors((dir / "task_head.safetensors").string(),
                                  {{"task_head.proj.weight", {2, 6}, head.proj_weight()},
                                   {"task_head.proj.bias", {2}, head.proj_bias()},
                                   {"task_head.weight", {4, 8}, std::vector<float>(32, nan).data()},
                                   {"task_head.bias", {4}, head.bias()}});
  EXPECT_THAT(error_of(dir, 6), HasSubstr("non-finite"));
  // More components than the model's width: named, not an error of the head's constructor.
  std::ofstream(dir / "task.json") << R"({"format": "bfm-task-head", "format_version": 2, "task": "category",
      "outputs": 4, "input": "tokens", "tokens": 4, "components": 9, "loss": "cross_entropy"})";
  EXPECT_THAT(error_of(dir, 6), AllOf(HasSubstr("task.json"), HasSubstr("9 components")));
  // A head written before the token heads (format_version 1, input "pooled").
  std::ofstream(dir / "task.json") << R"({"format": "bfm-task-head", "format_version": 1, "task": "category",
      "outputs": 4, "input": "pooled", "loss": "cross_entropy"})";
  EXPECT_THAT(error_of(dir, 6), AllOf(HasSubstr("task.json"), HasSubstr("pooled"), HasSubstr("fine-tune")));
  std::ofstream(dir / "task.json") << "{\"format\": \"bfm-task-head\", \"task\": ";
  EXPECT_THAT(error_of(dir, 6), AllOf(HasSubstr("task.json"), HasSubstr("not valid JSON")));
  fs::remove(dir / "task.json");
  EXPECT_THAT(error_of(dir, 6), AllOf(HasSubstr("task.json"), HasSubstr("missing")));
  fs::remove_all(dir);
}

}  // namespace
