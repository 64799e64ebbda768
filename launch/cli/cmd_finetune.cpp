// bfm finetune --checkpoint DIR --corpus DIR --task category|embedding --out DIR: full fine-tuning of a released
// checkpoint (or, with --scratch, of the same architecture from a random initialisation) on the labelled trials of the
// corpus' pre-training subjects, data parallel over MPI ranks (mpirun -np N), on the CPU. Writes a released
// checkpoint plus its task head (launch/train/finetune.h, docs/EVALUATION.md).
#include <filesystem>
#include <memory>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "launch/cli/commands.h"
#include "base/error.h"
#ifdef BFM_WITH_HDF5
#include "launch/data/provenance.h"
#include "launch/eval/data.h"
#include "launch/eval/tasks.h"
#include "launch/train/finetune.h"
#include "model/released_checkpoint.h"
#include "runtime/comm.h"
#include "runtime/progress.h"
#include "runtime/world.h"
#endif

namespace bfm::launch {

namespace {
struct FinetuneCli {
  std::string checkpoint, corpus, out;
  bool scratch = false;
  int64_t population = 0;
#ifdef BFM_WITH_HDF5
  FinetuneOptions options;
#endif
};
}  // namespace

Command add_finetune_command(CLI::App& app) {
  auto opt = std::make_shared<FinetuneCli>();
  CLI::App* cmd = app.add_subcommand(
      "finetune", "Fine-tune a released checkpoint on a corpus' stimulus task (all weights + a task head; MPI ranks)");
  cmd->add_option("--checkpoint", opt->checkpoint, "Released checkpoint folder (its config and, unless --scratch, weights)")
      ->required();
  cmd->add_option("--corpus", opt->corpus, "Corpus folder (bfm synth / bfm convert) with stimulus labels or embeddings")
      ->required();
  cmd->add_option("--out", opt->out, "Folder for the fine-tuned released checkpoint")->required();
  cmd->add_flag("--scratch", opt->scratch, "Train the same architecture from a random initialisation instead");
  cmd->add_option("--population", opt->population, "At most this many pre-training subjects (0: all)")
      ->capture_default_str();
#ifdef BFM_WITH_HDF5
  FinetuneOptions& o = opt->options;
  cmd->add_option("--task", o.task, eval::fine_tunable_list(" | "))->capture_default_str();
  cmd->add_option("--steps", o.steps, "Optimizer steps")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch-size", o.batch_size, "Global batch (windows per step over all ranks)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o.lr, "Encoder learning rate")->capture_default_str();
  cmd->add_option("--head-lr", o.head_lr, "Task head learning rate")->capture_default_str();
  cmd->add_option("--head-steps", o.head_steps,
                  "The first steps train the task head alone (encoder frozen), the rest everything (linear probe, "
                  "then fine-tune)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--components", o.components, "The task head's values per token (0: as bfm eval's probe chooses, "
                  "90 % of the token variance)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", o.seed, "Seed (batches, --scratch weights)")->capture_default_str();
  cmd->add_option("--device", o.device, "cpu | cuda | auto (one GPU per rank: its node-local rank picks it)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
#endif
  return [opt]() -> int {
#ifndef BFM_WITH_HDF5
    fail("bfm finetune reads a corpus and needs HDF5: this build has none (BFM_WITH_HDF5=OFF)");
#else
    namespace fs = std::filesystem;
    auto comm = runtime::make_communicator("auto", false);
    const bool lead = comm->rank() == 0;
    const std::unique_ptr<model::BrainModel> init = model::load_released_checkpoint(opt->checkpoint);
    if (opt->scratch) init->initialize(opt->options.seed + 1);
    eval::EvalDataOptions d;
    d.window = init->config().window;
    d.max_population = opt->population;
    d.load_held_out = false;  // only the pre-training subjects are trained on
    // The corpus must be in the checkpoint's atlas and parcel order (refused otherwise); other steps are warned about.
    for (const std::string& warning : check_provenance(init->config().data_provenance, opt->checkpoint,
                                                       corpus_provenance(opt->corpus), opt->corpus))
      if (lead) runtime::log_line("warning: " + warning);
    const eval::EvalData data = eval::load_eval_data(opt->corpus, d);
    opt->options.verbose = true;
    const FinetuneResult result = finetune(*init, data, opt->options, *comm);
    if (lead) {
      save_finetuned(opt->out, result, opt->options, opt->scratch ? std::string("scratch") : opt->checkpoint);
      runtime::log_line("fine-tuned checkpoint: " + opt->out + " (model.safetensors, config.json, task_head.safetensors, task.json)");
    }
    comm->barrier();
    return 0;
#endif
  };
}

}  // namespace bfm::launch
