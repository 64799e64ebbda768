#include "model/released_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/json_file.h"
#include "runtime/safetensors.h"

namespace bfm::model {

namespace fs = std::filesystem;

namespace {
void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  require(static_cast<bool>(out), path.string(), ": cannot write");
}
}  // namespace

void save_released_checkpoint(const std::string& dir, const BrainModel& model,
                              const std::map<std::string, std::string>& extra_files) {
  const fs::path target = fs::path(dir).lexically_normal();
  const fs::path partial = target.string() + ".partial";
  std::error_code ec;
  fs::remove_all(partial, ec);
  fs::create_directories(partial, ec);
  require(!ec, partial.string(), ": cannot create folder: ", ec.message());

  std::vector<runtime::TensorRef> tensors;
  const std::vector<float> params = model.params_copy();
  for (const auto& p : model.layout().params()) tensors.push_back({p.name, p.shape, params.data() + p.offset});
  runtime::write_safetensors((partial / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_text(partial / "config.json", to_checkpoint_json(model.config()).dump(2) + "\n");
  for (const auto& [name, contents] : extra_files) write_text(partial / name, contents);

  // Swap the whole folder in: the old checkpoint is removed only after the new one is complete on disk.
  const fs::path old = target.string() + ".old";
  fs::remove_all(old, ec);
  if (fs::exists(target)) {
    fs::rename(target, old, ec);
    require(!ec, target.string(), ": cannot move the previous checkpoint aside: ", ec.message());
  }
  fs::rename(partial, target, ec);
  require(!ec, partial.string(), ": cannot rename to ", target.string(), ": ", ec.message());
  fs::remove_all(old, ec);
}

ModelConfig read_checkpoint_config(const std::string& dir) {
  const fs::path folder(dir);
  require(fs::is_directory(folder), dir, ": not a checkpoint folder (no such directory)");
  const fs::path config_path = folder / "config.json";
  return from_checkpoint_json(io::read_json_file(config_path.string()), config_path.string());
}

std::unique_ptr<BrainModel> load_released_checkpoint(const std::string& dir, const Placement& placement) {
  const ModelConfig config = read_checkpoint_config(dir);
  const ParamLayout layout(config);
  std::vector<float> arena(size_t(layout.total()), 0.0f);
  const std::string weights_path = (fs::path(dir) / "model.safetensors").string();
  require(fs::exists(weights_path), weights_path, ": missing");
  const runtime::SafetensorsContents contents = runtime::read_safetensors(weights_path);
  for (const auto& p : layout.params()) {
    const auto it = contents.tensors.find(p.name);
    require(it != contents.tensors.end(), weights_path, ": missing tensor '", p.name, "' (shape ",
            shape_string(p.shape), ") that config.json's model needs");
    require(it->second.shape == p.shape, weights_path, ": tensor '", p.name, "' has shape ",
            shape_string(it->second.shape), ", config.json's model needs ", shape_string(p.shape));
    const auto& data = it->second.data;
    for (size_t i = 0; i < data.size(); ++i)
      require(std::isfinite(data[i]), weights_path, ": tensor '", p.name, "' holds a non-finite value (", data[i],
              ") at flat index ", i);
    std::copy(data.begin(), data.end(), arena.data() + p.offset);
  }
  for (const auto& [name, tensor] : contents.tensors)
    require(layout.has(name), weights_path, ": tensor '", name, "' ", shape_string(tensor.shape),
            " is not a parameter of the model in config.json (objectives ",
            nlohmann::json(config.objectives()).dump(), "): a checkpoint of another config?");
  std::unique_ptr<BrainModel> model = make_model(config, placement);
  model->load_params(arena.data());
  return model;
}

}  // namespace bfm::model
