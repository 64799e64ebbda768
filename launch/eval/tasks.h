// The task registry of bfm eval: every task's name, what kind of task it is, whether it classifies, the metrics it
// reports (the first one leads its table and few-shot curve), their chance levels, the columns of its predictions
// file, and the methods in the order the report shows them. Written once here: the options' defaults, the command
// line's checks, the gather over ranks, the summary and the report all read these lists (docs/EVALUATION.md, "Tasks").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfm::launch::eval {

enum class TaskKind {
  decoding,  // within each held-out subject: a property of the stimulus decoded from the trial's window
  encoding,  // within each held-out subject: the trial's window predicted from the stimulus
  subject,   // across subjects: a trait of the subject, learned from the pre-training subjects
};

struct TaskInfo {
  std::string name;
  TaskKind kind = TaskKind::decoding;
  bool classification = false;       // classes (accuracy, AUC) rather than values (r, R²)
  std::vector<std::string> metrics;   // the metrics it reports; the first is its main metric
  // The task whose decoder, fine-tuned model and predictions file this one uses: retrieval ranks the embedding
  // decoder's output; every other task is its own.
  std::string decoder;
  bool fine_tunable = false;          // bfm finetune trains a task head for it (launch/train/finetune.h)
};

// Every task, in the order the report lists them.
const std::vector<TaskInfo>& tasks();
std::vector<std::string> task_names();
// The task of that name; throws bfm::Error for an unknown one.
const TaskInfo& task_info(const std::string& name);
bool is_task(const std::string& name);
// The tasks bfm finetune trains a head for ("category", "embedding"), and them joined by `sep` for messages.
std::vector<std::string> fine_tunable_tasks();
std::string fine_tunable_list(const std::string& sep);

// The metric each task's few-shot curve and table show first.
std::string main_metric(const std::string& task);

// Retrieval's rows also carry the number of candidates a test trial's stimulus was ranked among (behind its chance
// level); a row of the results, never a metric of the summary.
inline const std::string kCandidates = "candidates";
// Every metric a result row may name: the tasks' metrics, then kCandidates.
std::vector<std::string> row_metrics();

// Every method, in the order the report lists them (docs/EVALUATION.md, "Methods").
const std::vector<std::string>& methods();
// The methods that learn from pre-training subjects' labels (ridge_pop, pca_pop, probe_pop, random_pop, finetune,
// scratch, oracle_pop): the label-scarce protocol (bfm eval --labelled-subjects) restricts them to K subjects' labels.
bool is_population_method(const std::string& method);
// Their per-subject form (ridge_pop -> ridge, pca_pop -> pca, probe_pop -> probe, random_pop -> random, oracle_pop ->
// oracle), what they reduce to with K = 0 labelled pre-training subjects; "" for finetune and scratch, which have
// none.
std::string per_subject_form(const std::string& method);

// A population method that used the labels of only K pre-training subjects carries "@K" in its name
// ("ridge_pop@2"); without "@" it used every pre-training subject's. labelled: K, or -1 for every subject.
std::string labelled_suffix(int labelled);
std::string base_method(const std::string& name);  // "ridge_pop@2" -> "ridge_pop"
int labelled_of(const std::string& name);           // "ridge_pop@2" -> 2, "ridge_pop" -> -1
// Every method name a run with these K values (-1: all) can write: the registry's, and each population method with
// each K's suffix.
std::vector<std::string> method_names(const std::vector<int>& labelled);
// The report's order: the registry's order of the base method, then K ascending, every subject (-1) last.
bool method_before(const std::string& a, const std::string& b);

// The chance level of a metric of a task: 1 / classes for (balanced) accuracy, 0.5 for AUC, 0 for r and R²; for
// top-k identification the mean over rows of k / candidates (candidates: the kCandidates values of the same task,
// method and fraction, in row order), NaN without any; top1_novel the same as top1 (over every fold's candidates,
// also those without a novel stimulus: close, not exact).
double chance_level(const std::string& task, const std::string& metric, int n_categories,
                    const std::vector<double>& candidates);

// The tasks that have a predictions file of their own (predictions/<task>.csv), in registry order.
std::vector<std::string> prediction_files();
// That file's header: the prediction's method, fraction, subject and fold, then the task's columns (truth and
// prediction); n_categories, stim_dim and n_parcels size the wide ones.
std::string predictions_header(const std::string& task, int n_categories, int64_t stim_dim, int64_t n_parcels);

}  // namespace bfm::launch::eval
