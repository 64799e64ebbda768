// Released checkpoints (MODEL_SPEC "Released checkpoint"): a folder with model.safetensors (every parameter of the
// config, float32, spec names) and config.json. What bfm forward, fine-tuning and PyTorch users load.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "model/brain_model.h"
#include "model/placement.h"

namespace bfm::model {

// Writes DIR/model.safetensors and DIR/config.json. The folder is assembled as DIR.partial and renamed into place
// when whole; an existing DIR is replaced only then, so an interrupted save leaves the previous checkpoint intact.
// `extra_files` (name -> contents) are written beside them (e.g. README.md, the model card).
void save_released_checkpoint(const std::string& dir, const BrainModel& model,
                              const std::map<std::string, std::string>& extra_files = {});

// Reads DIR/config.json, builds the model where `placement` says (the CPU by default) and loads its parameters. Throws bfm::Error naming the file and, where one
// is at fault, the tensor: missing folder or file, invalid JSON, a config that does not validate, a missing tensor,
// a tensor of the wrong shape or dtype, a tensor the config does not have (a checkpoint of another config), a
// truncated file, a non-finite value.
std::unique_ptr<BrainModel> load_released_checkpoint(const std::string& dir, const Placement& placement = {});

// Only the config.json of a checkpoint folder.
ModelConfig read_checkpoint_config(const std::string& dir);

}  // namespace bfm::model
