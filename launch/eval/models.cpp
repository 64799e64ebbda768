#include "launch/eval/models.h"

#include <algorithm>
#include <filesystem>

#include "base/error.h"
#include "launch/eval/scope.h"
#include "launch/eval/tasks.h"
#include "launch/train/finetune.h"
#include "model/placement.h"
#include "model/released_checkpoint.h"
#include "model/task_head.h"
#include "runtime/progress.h"

namespace bfm::launch::eval {

ModelSet gather_models(const model::BrainModel& pretrained, const EvalData& data, const EvalOptions& options,
                       const ModelSources& sources, runtime::Communicator& comm) {
  namespace fs = std::filesystem;
  const bool lead = comm.rank() == 0;
  ModelSet set;
  set.models.pretrained = &pretrained;
  set.provenance = {{"corpus", data.corpus}, {"checkpoint", sources.checkpoint}, {"ranks", comm.size()}};
  auto add_given = [&](const std::vector<std::string>& specs, std::map<std::string, TunedModel>& to,
                       const char* what) {
    for (const auto& spec : specs) {
      const auto eq = spec.find('=');
      require(eq != std::string::npos, "--", what, " ", spec, ": expected TASK=DIR");
      const std::string task = spec.substr(0, eq), dir = spec.substr(eq + 1);
      require(is_task(task) && task_info(task).fine_tunable, "--", what, " ", spec, ": task '", task,
              "' (fine-tuned models serve ", fine_tunable_list(" or "), ")");
      set.owned.push_back(model::load_released_checkpoint(dir));
      require(set.owned.back()->config().n_parcels == data.n_parcels &&
                  set.owned.back()->config().window == data.window,
              dir, ": a checkpoint of another input shape than ", sources.checkpoint);
      const model::ModelConfig& mc = set.owned.back()->config();
      set.heads.push_back(std::make_unique<model::TaskHead>(model::load_task_head(dir, mc.d_model, mc.n_tokens())));
      require(set.heads.back()->task() == task, dir, ": a head for task '", set.heads.back()->task(), "', given as ",
              task);
      to[task] = {set.owned.back().get(), set.heads.back().get()};
      set.provenance[what][task] = dir;
    }
  };
  add_given(sources.finetuned, set.models.finetuned, "finetuned");
  add_given(sources.scratch, set.models.scratch, "scratch");
  if (sources.finetune_steps <= 0) return set;
  // The two initial models (the pre-trained one; the from-scratch one, seeded alike for every task) and their heads'
  // starting projections, each fitted once for all the tasks and K that start from it.
  std::unique_ptr<model::BrainModel> fresh;
  std::map<bool, TokenProjection> start;
  auto initial = [&](bool scratch) -> const model::BrainModel& {
    if (scratch && !fresh) {
      fresh = model::make_model(pretrained.config(), model::Placement::cpu());
      fresh->initialize(sources.seed + 1);
    }
    return scratch ? *fresh : pretrained;
  };
  for (const TaskInfo& info : tasks()) {
    // A task with a fine-tuned model is fine-tuned where it or a task using its decoder (retrieval: embedding's) is
    // evaluated and the corpus has its target (categories for a classifier, stimulus embeddings otherwise).
    const std::string& task = info.name;
    const bool wanted = std::any_of(options.tasks.begin(), options.tasks.end(),
                                    [&](const std::string& t) { return task_info(t).decoder == task; });
    if (!info.fine_tunable || !wanted || (info.classification ? data.n_categories < 2 : data.stim_dim == 0)) continue;
    // One fine-tuned and one scratch model per K of the label-scarce protocol (none for K = 0), each on the labels of
    // those pre-training subjects only; K = all keeps bfm finetune's own choice (every pre-training subject, 15 %
    // held back for the validation loss).
    for (const LabelledSet& labelled : labelled_sets(data, options)) {
      if (labelled.k == 0) continue;
      for (const bool scratch : {false, true}) {
        auto& table = scratch ? set.models.scratch : set.models.finetuned;
        const std::string key = task + labelled.suffix;
        if (table.count(key)) continue;
        FinetuneOptions fo;
        fo.task = task;
        fo.steps = sources.finetune_steps;
        fo.head_steps = sources.finetune_head_steps;
        fo.seed = sources.seed;
        fo.verbose = true;
        fo.device = sources.device;
        if (labelled.k > 0)
          for (int s : labelled.subjects) fo.labelled_subjects.push_back(data.subjects[size_t(s)].id);
        const model::BrainModel& init = initial(scratch);
        if (!start.count(scratch)) start[scratch] = initial_head_projection(init, data, fo.components, fo.device, comm);
        fo.initial_projection = &start.at(scratch);
        if (lead)
          runtime::log_line(std::string("eval: ") + (scratch ? "training from scratch" : "fine-tuning") + " for " +
                            task + (labelled.k > 0 ? " on " + std::to_string(labelled.k) + " labelled subjects" : ""));
        FinetuneResult r = finetune(init, data, fo, comm);
        const std::string dir = (fs::path(sources.out) / ((scratch ? "scratch-" : "finetuned-") + key)).string();
        if (lead) save_finetuned(dir, r, fo, scratch ? std::string("scratch") : sources.checkpoint);
        set.provenance[scratch ? "scratch" : "finetuned"][key] = dir;
        set.owned.push_back(std::move(r.model));
        set.heads.push_back(std::make_unique<model::TaskHead>(std::move(r.head)));
        table[key] = {set.owned.back().get(), set.heads.back().get()};
      }
    }
  }
  return set;
}

}  // namespace bfm::launch::eval
