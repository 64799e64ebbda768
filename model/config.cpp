#include "model/config.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace bfm::model {

namespace {
constexpr int kFormatVersion = 1;

int whole_hidden(double ratio, int width, const char* what) {
  const double hidden = ratio * width;
  if (std::abs(hidden - std::round(hidden)) > 1e-9 || hidden < 1)
    fail(what, ": mlp_ratio ", ratio, " times width ", width, " is not a positive whole number");
  return static_cast<int>(std::lround(hidden));
}
}  // namespace

int ModelConfig::mlp_hidden() const { return whole_hidden(mlp_ratio, d_model, "encoder"); }
int ModelConfig::dec_mlp_hidden() const { return decoder ? whole_hidden(mlp_ratio, decoder->d_model, "decoder") : 0; }

int ModelConfig::n_masked_tokens() const { return static_cast<int>(std::nearbyint(mask_ratio * n_tokens())); }

std::vector<std::string> ModelConfig::objectives() const {
  std::vector<std::string> out;
  if (mae) out.emplace_back("mae");
  if (causal) out.emplace_back("causal");
  if (contrastive) out.emplace_back("contrastive");
  return out;
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int v, const char* name) { require(v > 0, source, ": ", name, " must be positive, got ", v); };
  positive(n_parcels, "n_parcels");
  positive(window, "window");
  positive(patch_len, "patch_len");
  positive(d_model, "d_model");
  positive(n_heads, "n_heads");
  positive(n_layers, "n_layers");
  require(window % patch_len == 0, source, ": window ", window, " is not a multiple of patch_len ", patch_len);
  require(d_model % n_heads == 0, source, ": d_model ", d_model, " is not a multiple of n_heads ", n_heads);
  require(mlp_ratio > 0, source, ": mlp_ratio must be positive, got ", mlp_ratio);
  (void)mlp_hidden();
  require(ln_eps > 0, source, ": ln_eps must be positive");
  require(mae || causal, source, ": objectives must include \"mae\" or \"causal\"");
  require(!(mae && causal), source, ": objectives \"mae\" and \"causal\" cannot be combined (MODEL_SPEC)");
  if (mae) {
    require(decoder.has_value(), source, ": objective \"mae\" needs a decoder (d_model, n_heads, n_layers)");
    require(decoder->d_model > 0 && decoder->n_heads > 0 && decoder->n_layers > 0, source,
            ": decoder d_model, n_heads and n_layers must be positive");
    require(decoder->d_model % decoder->n_heads == 0, source, ": decoder d_model ", decoder->d_model,
            " is not a multiple of decoder n_heads ", decoder->n_heads);
    (void)dec_mlp_hidden();
    require(mask_ratio > 0 && mask_ratio < 1, source, ": mask_ratio must be in (0, 1), got ", mask_ratio);
  }
  if (contrastive) {
    require(stim_dim > 0, source, ": objective \"contrastive\" needs stim_dim > 0");
    require(proj_dim > 0, source, ": objective \"contrastive\" needs proj_dim > 0");
  }
}

nlohmann::json to_checkpoint_json(const ModelConfig& c) {
  nlohmann::json j;
  j["format"] = "bfm-checkpoint";
  j["format_version"] = kFormatVersion;
  j["n_parcels"] = c.n_parcels;
  j["window"] = c.window;
  j["patch_len"] = c.patch_len;
  j["d_model"] = c.d_model;
  j["n_heads"] = c.n_heads;
  j["n_layers"] = c.n_layers;
  j["mlp_ratio"] = c.mlp_ratio;
  j["objectives"] = c.objectives();
  j["mask_ratio"] = c.mask_ratio;
  if (c.decoder)
    j["decoder"] = {{"d_model", c.decoder->d_model}, {"n_heads", c.decoder->n_heads}, {"n_layers", c.decoder->n_layers}};
  else
    j["decoder"] = nullptr;
  j["stim_dim"] = c.contrastive ? nlohmann::json(c.stim_dim) : nlohmann::json(nullptr);
  j["proj_dim"] = c.contrastive ? nlohmann::json(c.proj_dim) : nlohmann::json(nullptr);
  j["ln_eps"] = c.ln_eps;
  j["gelu"] = "tanh";
  nlohmann::json weights = nlohmann::json::object();
  if (c.mae) weights["mae"] = c.weight_mae;
  if (c.causal) weights["causal"] = c.weight_causal;
  if (c.contrastive) weights["contrastive"] = c.weight_contrastive;
  j["loss_weights"] = weights;
  j["atlas"] = c.atlas;
  j["tr_seconds"] = c.tr_seconds;
  j["train_steps"] = c.train_steps;
  j["train_subjects"] = c.train_subjects;
  j["train_datasets"] = c.train_datasets;
  j["data_provenance"] =
      c.data_provenance.empty() ? nlohmann::json(nullptr) : nlohmann::json::parse(c.data_provenance, nullptr, false);
  j["code_version"] = std::string("bfm ") + BFM_VERSION;
  return j;
}

namespace {
template <class T>
T get(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.contains(key)) fail(source, ": missing key \"", key, "\"");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(source, ": key \"", key, "\" has the wrong type (", j.at(key).type_name(), ")");
  }
}
}  // namespace

ModelConfig from_checkpoint_json(const nlohmann::json& j, const std::string& source) {
  require(j.is_object(), source, ": not a JSON object");
  const auto format = get<std::string>(j, "format", source);
  require(format == "bfm-checkpoint", source, ": format is \"", format, "\", expected \"bfm-checkpoint\"");
  const int version = get<int>(j, "format_version", source);
  require(version >= 1 && version <= kFormatVersion, source, ": format_version ", version,
          " is not supported by this build (reads 1..", kFormatVersion, ")");
  ModelConfig c;
  c.n_parcels = get<int>(j, "n_parcels", source);
  c.window = get<int>(j, "window", source);
  c.patch_len = get<int>(j, "patch_len", source);
  c.d_model = get<int>(j, "d_model", source);
  c.n_heads = get<int>(j, "n_heads", source);
  c.n_layers = get<int>(j, "n_layers", source);
  c.mlp_ratio = get<double>(j, "mlp_ratio", source);
  for (const auto& name : get<std::vector<std::string>>(j, "objectives", source)) {
    if (name == "mae") c.mae = true;
    else if (name == "causal") c.causal = true;
    else if (name == "contrastive") c.contrastive = true;
    else fail(source, ": unknown objective \"", name, "\" (known: mae, causal, contrastive)");
  }
  if (j.contains("mask_ratio") && !j["mask_ratio"].is_null()) c.mask_ratio = get<double>(j, "mask_ratio", source);
  if (j.contains("decoder") && !j["decoder"].is_null()) {
    const auto& d = j["decoder"];
    const std::string where = source + " (decoder)";
    c.decoder = DecoderConfig{get<int>(d, "d_model", where), get<int>(d, "n_heads", where), get<int>(d, "n_layers", where)};
  }
  if (j.contains("stim_dim") && !j["stim_dim"].is_null()) c.stim_dim = get<int>(j, "stim_dim", source);
  if (j.contains("proj_dim") && !j["proj_dim"].is_null()) c.proj_dim = get<int>(j, "proj_dim", source);
  c.ln_eps = j.contains("ln_eps") ? get<double>(j, "ln_eps", source) : 1e-5;
  if (j.contains("gelu")) {
    const auto gelu = get<std::string>(j, "gelu", source);
    require(gelu == "tanh", source, ": gelu \"", gelu, "\" is not supported (only \"tanh\")");
  }
  if (j.contains("loss_weights") && j["loss_weights"].is_object()) {
    const auto& w = j["loss_weights"];
    const std::string where = source + " (loss_weights)";
    if (w.contains("mae")) c.weight_mae = get<double>(w, "mae", where);
    if (w.contains("causal")) c.weight_causal = get<double>(w, "causal", where);
    if (w.contains("contrastive")) c.weight_contrastive = get<double>(w, "contrastive", where);
  }
  if (j.contains("atlas") && j["atlas"].is_string()) c.atlas = j["atlas"].get<std::string>();
  if (j.contains("tr_seconds") && j["tr_seconds"].is_number()) c.tr_seconds = j["tr_seconds"].get<double>();
  if (j.contains("train_steps") && j["train_steps"].is_number()) c.train_steps = j["train_steps"].get<int64_t>();
  if (j.contains("train_subjects") && j["train_subjects"].is_number())
    c.train_subjects = j["train_subjects"].get<int64_t>();
  if (j.contains("train_datasets") && j["train_datasets"].is_array())
    c.train_datasets = j["train_datasets"].get<std::vector<std::string>>();
  if (j.contains("data_provenance") && !j["data_provenance"].is_null()) {
    require(j["data_provenance"].is_object(), source, ": key \"data_provenance\" is not an object");
    c.data_provenance = j["data_provenance"].dump();
  }
  c.validate(source);
  return c;
}

}  // namespace bfm::model
