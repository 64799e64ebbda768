// The prefetching window loader (window_loader.h): one thread does all the HDF5 work, the caller only takes batches.
#ifdef BFM_WITH_HDF5

#include "io/window_loader.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "runtime/error.h"
#include "runtime/progress.h"

namespace bfm::io {

namespace {
// Debian's HDF5 is not thread-safe: the threads of several loaders (training and validation...) take turns through
// this process-wide lock, one batch (or one open, one close) at a time.
std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

WindowLoader::WindowLoader(std::vector<std::string> shard_paths, WindowSampler sampler, const LoaderOptions& options)
    : paths_(std::move(shard_paths)), sampler_(std::move(sampler)), window_(options.window),
      batch_(sampler_.local_batch()), memory_budget_(options.memory_budget_bytes) {
  require(!paths_.empty(), "window loader: no shard files");
  require(window_ > 0, "window loader: window length ", window_, " must be > 0");
  require(memory_budget_ > 0, "window loader: memory budget ", memory_budget_, " bytes must be > 0");
  consumed_ = sampler_.state();
  thread_ = std::thread(&WindowLoader::run_thread, this);
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [&] { return opened_; });
  if (open_failed_) {
    lock.unlock();
    thread_.join();
    std::rethrow_exception(error_);
  }
}

namespace {
std::vector<std::string> paths_of(const Corpus& corpus) {
  std::vector<std::string> paths;
  for (int64_t s = 0; s < corpus.n_shards(); ++s) paths.push_back(corpus.shard(s).path());
  return paths;
}
}  // namespace

WindowLoader::WindowLoader(const Corpus& corpus, WindowSampler sampler, const LoaderOptions& options)
    : WindowLoader(paths_of(corpus), std::move(sampler), options) {}

WindowLoader::~WindowLoader() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  space_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t WindowLoader::batch_bytes() const {
  return batch_ * (window_ * parcels_ + stimulus_dim_) * static_cast<int64_t>(sizeof(float)) +
         (labels_ ? batch_ * static_cast<int64_t>(sizeof(int32_t)) : 0) + batch_ * static_cast<int64_t>(sizeof(Window));
}

void WindowLoader::run_thread() {
  // The readers live and die on this thread, so every HDF5 call (open, read, close) is made here, under hdf5_mutex().
  struct Readers {
    std::vector<std::unique_ptr<ShardReader>> list;
    ~Readers() {
      std::lock_guard hdf5(hdf5_mutex());
      list.clear();
    }
  } readers;
  auto& owned = readers.list;
  std::vector<ShardReader*> shards;
  std::vector<int64_t> first_run = {0};  // [shards + 1] prefix sums of run counts: the corpus' global run numbers
  try {
    int64_t parcels = 0, stimulus_dim = 0;
    bool labels = false;
    std::unique_lock hdf5(hdf5_mutex());
    for (const auto& path : paths_) {
      owned.push_back(std::make_unique<ShardReader>(path));
      const ShardReader& r = *owned.back();
      shards.push_back(owned.back().get());
      first_run.push_back(first_run.back() + static_cast<int64_t>(r.runs().size()));
      if (parcels == 0) parcels = r.n_parcels();
      require(r.n_parcels() == parcels, path, ": ", r.n_parcels(), " parcels, but ", paths_.front(), " has ",
              parcels);
      if (r.header().stimulus_dim > 0) {
        require(stimulus_dim == 0 || stimulus_dim == r.header().stimulus_dim, path, ": stimulus embedding of ",
                r.header().stimulus_dim, " dimensions, other shards have ", stimulus_dim);
        stimulus_dim = r.header().stimulus_dim;
      }
      labels = labels || r.header().labels;
    }
    hdf5.unlock();
    std::lock_guard lock(mutex_);
    parcels_ = parcels;
    stimulus_dim_ = stimulus_dim;
    labels_ = labels;
    depth_ = std::clamp<int64_t>(memory_budget_ / batch_bytes(), 1, kMaxDepth);
    opened_ = true;
  } catch (...) {
    std::lock_guard lock(mutex_);
    error_ = std::current_exception();
    opened_ = open_failed_ = true;
    ready_.notify_all();
    return;
  }
  ready_.notify_all();

  for (;;) {
    {
      std::unique_lock lock(mutex_);
      space_.wait(lock, [&] { return stopping_ || static_cast<int64_t>(queue_.size()) < depth_; });
      if (stopping_) return;
    }
    WindowBatch batch;
    {
      std::lock_guard lock(mutex_);
      if (!spare_.empty()) {
        batch = std::move(spare_.back());
        spare_.pop_back();
      }
    }
    try {
      std::lock_guard hdf5(hdf5_mutex());
      read_batch(shards, first_run, batch);
    } catch (...) {
      std::lock_guard lock(mutex_);
      error_ = std::current_exception();
      ready_.notify_all();
      return;
    }
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(batch));
      ++read_;
    }
    ready_.notify_all();
  }
}

void WindowLoader::read_batch(const std::vector<ShardReader*>& shards, const std::vector<int64_t>& first_run,
                              WindowBatch& b) {
  const int64_t T = window_, P = parcels_, S = stimulus_dim_, B = batch_;
  b.windows = sampler_.next_batch();
  b.state_after = sampler_.state();
  b.timeseries.resize(static_cast<size_t>(B * T * P));  // every row is overwritten below
  if (S > 0) b.stimulus.assign(static_cast<size_t>(B * S), 0.0f);
  if (labels_) b.label.assign(static_cast<size_t>(B), -1);
  std::vector<float> stim(static_cast<size_t>(T * S));
  std::vector<int32_t> lab(static_cast<size_t>(T));
  for (int64_t i = 0; i < B; ++i) {
    const Window w = b.windows[static_cast<size_t>(i)];
    require(w.run >= 0 && w.run < first_run.back(), "window loader: the sampler's run ", w.run,
            " is not in the corpus (", first_run.back(), " runs)");
    const auto s = static_cast<size_t>(std::upper_bound(first_run.begin(), first_run.end(), w.run) -
                                       first_run.begin() - 1);
    const ShardReader& shard = *shards[s];
    const int64_t run = w.run - first_run[s];
    try {
      shard.read_window(run, w.start, T, b.timeseries.data() + i * T * P);
      if (S > 0 && shard.header().stimulus_dim > 0) {
        shard.read_stimulus(run, w.start, T, stim.data());
        float* mean = b.stimulus.data() + i * S;  // [S]: the window's average embedding, summed in double
        for (int64_t k = 0; k < S; ++k) {
          double sum = 0;
          for (int64_t t = 0; t < T; ++t) sum += stim[static_cast<size_t>(t * S + k)];
          mean[k] = static_cast<float>(sum / static_cast<double>(T));
        }
      }
      if (labels_ && shard.header().labels) {
        shard.read_labels(run, w.start, T, lab.data());
        std::sort(lab.begin(), lab.end());
        int32_t best = -1;
        int64_t best_count = 0;
        for (size_t a = 0; a < lab.size();) {
          size_t e = a;
          while (e < lab.size() && lab[e] == lab[a]) ++e;
          if (lab[a] >= 0 && static_cast<int64_t>(e - a) > best_count) {
            best = lab[a];
            best_count = static_cast<int64_t>(e - a);
          }
          a = e;
        }
        b.label[static_cast<size_t>(i)] = best;
      }
    } catch (const Error& e) {
      fail(e.what(), " [window loader: corpus run ", w.run, ", start ", w.start, ", T ", T, ", row ", i,
           " of a batch]");
    }
  }
}

WindowBatch WindowLoader::next() {
  runtime::Stopwatch waited;
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [&] { return !queue_.empty() || error_; });
  wait_last_ = waited.seconds();
  wait_total_ += wait_last_;
  if (queue_.empty()) std::rethrow_exception(error_);
  WindowBatch batch = std::move(queue_.front());
  queue_.pop_front();
  consumed_ = batch.state_after;
  lock.unlock();
  space_.notify_all();
  return batch;
}

void WindowLoader::recycle(WindowBatch&& used) {
  // Within the budget: queued + the one being read + spares <= depth.
  std::lock_guard lock(mutex_);
  if (static_cast<int64_t>(queue_.size() + spare_.size()) + 2 <= depth_) spare_.push_back(std::move(used));
}

SamplerState WindowLoader::state() const {
  std::lock_guard lock(mutex_);
  return consumed_;
}

double WindowLoader::data_wait_seconds() const {
  std::lock_guard lock(mutex_);
  return wait_total_;
}

double WindowLoader::last_wait_seconds() const {
  std::lock_guard lock(mutex_);
  return wait_last_;
}

int64_t WindowLoader::batches_read() const {
  std::lock_guard lock(mutex_);
  return read_;
}

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
