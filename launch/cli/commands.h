// The `bfm` subcommands. Each registers its options on the CLI11 app and returns the function that runs it.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace bfm::launch {

using Command = std::function<int()>;

Command add_init_command(CLI::App& app);      // bfm init: a randomly initialised released checkpoint
Command add_forward_command(CLI::App& app);   // bfm forward: the conformance interface of MODEL_SPEC.md
Command add_pretrain_command(CLI::App& app);  // bfm pretrain: train on synthetic windows, write a checkpoint
Command add_config_command(CLI::App& app);    // bfm config: print the defaults or a resolved config
Command add_info_command(CLI::App& app);      // bfm info: version, build options, devices
Command add_synth_command(CLI::App& app);     // bfm synth: a synthetic multi-study corpus with ground truth
Command add_convert_command(CLI::App& app);   // bfm convert: BIDS / NIfTI scans + an atlas -> a corpus
Command add_inspect_command(CLI::App& app);   // bfm inspect: what a corpus holds; --verify reads every chunk
Command add_plot_command(CLI::App& app);      // bfm plot: a run's metrics.jsonl as PNG charts
Command add_export_command(CLI::App& app);    // bfm export: a released checkpoint from a training checkpoint
Command add_finetune_command(CLI::App& app);  // bfm finetune: all weights + a task head on a corpus' stimulus task
Command add_eval_command(CLI::App& app);      // bfm eval: downstream tasks on held-out subjects, methods side by side
Command add_embed_command(CLI::App& app);     // bfm embed: a checkpoint's embeddings of a corpus' or scans' windows

}  // namespace bfm::launch
