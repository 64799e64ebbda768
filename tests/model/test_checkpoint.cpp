// Released checkpoints: round trips, and the clear errors for the ways a checkpoint goes bad.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "model/released_checkpoint.h"
#include "model/cpu/cpu_model.h"
#include "base/error.h"
#include "runtime/safetensors.h"
#include "tests/common/test_files.h"

namespace {

namespace fs = std::filesystem;
using bfm::model::CpuBrainModel;
using bfm::model::ModelConfig;
using ::testing::HasSubstr;

ModelConfig config(bool contrastive = true) {
  ModelConfig c;
  c.n_parcels = 7, c.window = 12, c.patch_len = 4, c.d_model = 12, c.n_heads = 3, c.n_layers = 2;
  c.mae = true, c.contrastive = contrastive, c.decoder = bfm::model::DecoderConfig{8, 2, 1};
  c.stim_dim = 5, c.proj_dim = 6;
  return c;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = bfm::test::make_temp_dir("checkpoint");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string saved(const ModelConfig& c, const std::string& name = "ckpt") {
    CpuBrainModel model(c);
    model.initialize(3);
    const std::string path = (dir_ / name).string();
    bfm::model::save_released_checkpoint(path, model);
    return path;
  }

  // Rewrites model.safetensors with `edit` applied to the list of tensors.
  template <class Edit>
  void rewrite(const std::string& ckpt, Edit edit) {
    const std::string file = ckpt + "/model.safetensors";
    auto contents = bfm::runtime::read_safetensors(file);
    std::vector<std::pair<std::string, bfm::runtime::Tensor>> tensors(contents.tensors.begin(), contents.tensors.end());
    edit(tensors);
    std::vector<bfm::runtime::TensorRef> refs;
    for (auto& [name, t] : tensors) refs.push_back({name, t.shape, t.data.data()});
    bfm::runtime::write_safetensors(file, refs);
  }

  std::string error_of(const std::string& ckpt) {
    try {
      bfm::model::load_released_checkpoint(ckpt);
    } catch (const bfm::Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(CheckpointTest, RoundTripKeepsEveryParameterAndTheConfig) {
  ModelConfig c = config();
  c.weight_contrastive = 0.25;
  c.train_steps = 123;
  c.train_datasets = {"a", "b"};
  CpuBrainModel model(c);
  model.initialize(9);
  const std::string path = (dir_ / "rt").string();
  bfm::model::save_released_checkpoint(path, model, {{"README.md", "# card\n"}});
  EXPECT_TRUE(fs::exists(path + "/README.md"));
  EXPECT_FALSE(fs::exists(path + ".partial"));
  const auto loaded = bfm::model::load_released_checkpoint(path);
  ASSERT_EQ(loaded->arena_size(), model.arena_size());
  const std::vector<float> got = loaded->params_copy();
  for (int64_t i = 0; i < model.arena_size(); ++i) ASSERT_EQ(got[size_t(i)], model.params()[i]) << i;
  EXPECT_EQ(loaded->config().weight_contrastive, 0.25);
  EXPECT_EQ(loaded->config().train_steps, 123);
  EXPECT_EQ(loaded->config().train_datasets, c.train_datasets);
  EXPECT_EQ(loaded->config().decoder->d_model, 8);

  // The config.json keys the spec names are all there.
  std::ifstream in(path + "/config.json");
  const auto j = nlohmann::json::parse(in);
  for (const char* key : {"format", "format_version", "n_parcels", "window", "patch_len", "d_model", "n_heads",
                          "n_layers", "mlp_ratio", "objectives", "mask_ratio", "decoder", "stim_dim", "proj_dim",
                          "ln_eps", "gelu", "atlas", "tr_seconds", "train_steps", "train_subjects", "train_datasets",
                          "code_version"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["format"], "bfm-checkpoint");
  EXPECT_EQ(j["gelu"], "tanh");
}

TEST_F(CheckpointTest, SavingOverAnExistingCheckpointReplacesIt) {
  const std::string path = saved(config());
  CpuBrainModel other(config());
  other.initialize(42);
  bfm::model::save_released_checkpoint(path, other);
  const std::vector<float> got = bfm::model::load_released_checkpoint(path)->params_copy();
  for (int64_t i = 0; i < other.arena_size(); ++i) ASSERT_EQ(got[size_t(i)], other.params()[i]);
  EXPECT_FALSE(fs::exists(path + ".old"));
}

TEST_F(CheckpointTest, MissingTensorIsNamed) {
  const std::string path = saved(config());
  rewrite(path, [](auto& tensors) {
    std::erase_if(tensors, [](const auto& t) { return t.first == "blocks.1.mlp.fc1.bias"; });
  });
  const std::string error = error_of(path);
  EXPECT_THAT(error, HasSubstr("model.safetensors"));
  EXPECT_THAT(error, HasSubstr("missing tensor 'blocks.1.mlp.fc1.bias'"));
}

TEST_F(CheckpointTest, WrongShapeIsNamed) {
  const std::string path = saved(config());
  rewrite(path, [](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "parcel_embed") {
        t.shape = {6, 12};
        t.data.resize(72);
      }
  });
  const std::string error = error_of(path);
  EXPECT_THAT(error, HasSubstr("'parcel_embed' has shape [6, 12]"));
  EXPECT_THAT(error, HasSubstr("[7, 12]"));
}

TEST_F(CheckpointTest, TensorOfAnotherConfigIsNamed) {
  const std::string path = saved(config(/*contrastive=*/false));
  rewrite(path, [](auto& tensors) {
    tensors.push_back({"brain_proj.weight", bfm::runtime::Tensor{{6, 12}, std::vector<float>(72, 0.f)}});
  });
  EXPECT_THAT(error_of(path), HasSubstr("'brain_proj.weight'"));
  EXPECT_THAT(error_of(path), HasSubstr("another config"));
}

TEST_F(CheckpointTest, WrongDtypeIsNamed) {
  const std::string path = saved(config());
  // Re-type the first tensor as F16 in the JSON header (same byte length: two F16 per F32 needs a doubled shape).
  const std::string file = path + "/model.safetensors";
  std::ifstream in(file, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  auto header = nlohmann::json::parse(bytes.substr(8, header_len));
  header["patch_embed.bias"]["dtype"] = "F16";
  header["patch_embed.bias"]["shape"] = {24};
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  const uint64_t n = text.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  out += text + bytes.substr(8 + header_len);
  std::ofstream(file, std::ios::binary | std::ios::trunc) << out;
  const std::string error = error_of(path);
  EXPECT_THAT(error, HasSubstr("patch_embed.bias"));
  EXPECT_THAT(error, HasSubstr("F16"));
}

TEST_F(CheckpointTest, TruncatedFileIsNamed) {
  const std::string path = saved(config());
  const std::string file = path + "/model.safetensors";
  fs::resize_file(file, fs::file_size(file) - 100);
  const std::string error = error_of(path);
  EXPECT_THAT(error, HasSubstr("model.safetensors"));
  EXPECT_THAT(error, HasSubstr("truncated"));
}

TEST_F(CheckpointTest, NonFiniteValueIsNamed) {
  const std::string path = saved(config());
  rewrite(path, [](auto& tensors) {
    for (auto& [name, t] : tensors)
      if (name == "time_embed") t.data[4] = std::nanf("");
  });
  EXPECT_THAT(error_of(path), HasSubstr("'time_embed' holds a non-finite value"));
}

TEST_F(CheckpointTest, BadConfigJsonIsNamed) {
  const std::string path = saved(config());
  std::ofstream(path + "/config.json", std::ios::trunc) << "{\"format\": \"bfm-checkpoint\", ";
  EXPECT_THAT(error_of(path), HasSubstr("config.json: not valid JSON"));
  std::ofstream(path + "/config.json", std::ios::trunc) << R"({"format": "bfm-checkpoint", "format_version": 1})";
  EXPECT_THAT(error_of(path), HasSubstr("missing key \"n_parcels\""));
  std::ofstream(path + "/config.json", std::ios::trunc) << R"({"format": "something-else"})";
  EXPECT_THAT(error_of(path), HasSubstr("format is \"something-else\""));
  fs::remove(path + "/config.json");
  EXPECT_THAT(error_of(path), HasSubstr("config.json: missing"));
  EXPECT_THAT(error_of((dir_ / "nowhere").string()), HasSubstr("no such directory"));
}

TEST_F(CheckpointTest, InconsistentConfigIsRefused) {
  const std::string path = saved(config());
  std::ifstream in(path + "/config.json");
  auto j = nlohmann::json::parse(in);
  j["n_heads"] = 5;  // 12 is not a multiple of 5
  std::ofstream(path + "/config.json", std::ios::trunc) << j.dump();
  EXPECT_THAT(error_of(path), HasSubstr("d_model 12 is not a multiple of n_heads 5"));
}

}  // namespace
