// The prefetching window loader (window_loader.h): one thread does all the HDF5 work, the caller only takes batches.
#ifdef BFM_WITH_HDF5

#include "io/window_loader.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstring>
#include <functional>
#include <list>
#include <memory>
#include <unordered_map>
#include <utility>

#include "io/half.h"
#include "io/mapped_guard.h"
#include "base/error.h"
#include "base/stopwatch.h"

namespace bfm::io {

namespace {
// Debian's HDF5 is not thread-safe: the threads of several loaders (training and validation...) take turns through
// this process-wide lock, one batch (or one open, one close) at a time.
std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

using Rows = ShardReader::Rows;

// Cache key of chunk `chunk` of dataset `which` of shard `shard`.
uint64_t chunk_key(size_t shard, Rows which, int64_t chunk) {
  return static_cast<uint64_t>(shard) << 40 | static_cast<uint64_t>(which) << 38 | static_cast<uint64_t>(chunk);
}

// A piece of a batch: rows [r0, r0 + n) of one chunk, to rows [t, t + n) of window `window`.
struct Piece {
  uint64_t key;
  uint32_t shard;
  Rows which;
  int64_t chunk, window, r0, n, t;
};

// Copies a chunk's pieces [first, end) out of `bytes` (a cache slot or the file's mapping): time series rows to
// ts [B, T, P] (float32, or float16 decoded), embeddings and labels to staging rows. Plain data only: it runs under
// run_guarded where `bytes` is a mapping.
struct CopyJob {
  const Piece* pieces;
  size_t first, end;
  const unsigned char* bytes;
  bool half;
  float* ts;
  float* stim;
  int32_t* label;
  int64_t T, P, S;
};
void copy_pieces(void* context) {
  const CopyJob& j = *static_cast<const CopyJob*>(context);
  const int64_t T = j.T, P = j.P, S = j.S;
  for (size_t q = j.first; q < j.end; ++q) {
    const Piece& p = j.pieces[q];
    if (p.which == Rows::timeseries) {
      float* out = j.ts + (p.window * T + p.t) * P;
      if (j.half) {
        const auto* h = reinterpret_cast<const uint16_t*>(j.bytes) + p.r0 * P;
        for (int64_t e = 0; e < p.n * P; ++e) out[e] = half_to_float(h[e]);
      } else {
        std::memcpy(out, j.bytes + p.r0 * P * 4, static_cast<size_t>(p.n * P) * 4);
      }
    } else if (p.which == Rows::stimulus) {
      std::memcpy(j.stim + (p.window * T + p.t) * S, j.bytes + p.r0 * S * 4, static_cast<size_t>(p.n * S) * 4);
    } else {
      std::memcpy(j.label + p.window * T + p.t, j.bytes + p.r0 * 4, static_cast<size_t>(p.n) * 4);
    }
  }
}
}  // namespace

// The chunk cache (least recently used first out; the chunks of the batch being read are pinned) and the helper
// threads that share a batch's chunk reads and copies with the loader's thread.
struct WindowLoader::Cache {
  struct Buffer {  // not zeroed: every chunk read overwrites it
    std::unique_ptr<unsigned char[]> data;
    size_t size = 0;
  };
  struct Slot {
    uint64_t key = 0;
    Buffer bytes;
    uint64_t batch = 0;  // the last batch that used it: pinned while that batch is read
  };
  std::list<Slot> lru;  // front: most recently used
  std::unordered_map<uint64_t, std::list<Slot>::iterator> index;
  int64_t used = 0, capacity = 0;
  uint64_t batch = 0;  // serial number of the batch being read

  // The slot of `key`, marked as used by the current batch; nullptr if not cached.
  Slot* find(uint64_t key) {
    const auto it = index.find(key);
    if (it == index.end()) return nullptr;
    lru.splice(lru.begin(), lru, it->second);
    it->second->batch = batch;
    return &*it->second;
  }
  // A new slot of `bytes` bytes for `key` (not cached): evicts unpinned chunks, least recently used first, while the
  // cache would exceed its capacity (pinned ones stay, so one batch may overfill it), reusing a buffer of that size.
  Slot* insert(uint64_t key, size_t bytes) {
    Buffer buffer;
    for (auto it = lru.end(); it != lru.begin() && used + static_cast<int64_t>(bytes) > capacity;) {
      --it;
      if (it->batch == batch) continue;
      used -= static_cast<int64_t>(it->bytes.size);
      if (!buffer.data && it->bytes.size == bytes) buffer = std::move(it->bytes);
      index.erase(it->key);
      it = lru.erase(it);
    }
    if (!buffer.data) buffer = Buffer{std::unique_ptr<unsigned char[]>(new unsigned char[bytes]), bytes};
    lru.push_front(Slot{key, std::move(buffer), batch});
    index[key] = lru.begin();
    used += static_cast<int64_t>(bytes);
    return &lru.front();
  }
  void erase(uint64_t key) {
    const auto it = index.find(key);
    if (it == index.end()) return;
    used -= static_cast<int64_t>(it->second->bytes.size);
    lru.erase(it->second);
    index.erase(it);
  }

  // ---- helper threads: run(n, job) calls job(i, thread) for i in [0, n) on the loader's thread (thread 0) and the
  // helpers; the first exception is re-thrown once all are done.
  std::vector<std::thread> helpers;
  std::mutex m;
  std::condition_variable go, finished;
  uint64_t generation = 0;
  int active = 0;
  bool quit = false;
  std::function<void(int64_t, int)> job;
  std::atomic<int64_t> next{0};
  int64_t count = 0;
  std::exception_ptr error;

  explicit Cache(int threads) {
    for (int t = 1; t < threads; ++t) helpers.emplace_back([this, t] { helper(t); });
  }
  ~Cache() {
    {
      std::lock_guard lock(m);
      quit = true;
    }
    go.notify_all();
    for (auto& h : helpers) h.join();
  }
  void work(int thread) {
    for (int64_t i; (i = next.fetch_add(1)) < count;) {
      try {
        job(i, thread);
      } catch (...) {
        std::lock_guard lock(m);
        if (!error) error = std::current_exception();
      }
    }
  }
  void helper(int thread) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(m);
        go.wait(lock, [&] { return quit || generation != seen; });
        if (quit) return;
        seen = generation;
      }
      work(thread);
      {
        std::lock_guard lock(m);
        --active;
      }
      finished.notify_all();
    }
  }
  void run(int64_t n, std::function<void(int64_t, int)> f) {
    if (n <= 0) return;
    {
      std::lock_guard lock(m);
      job = std::move(f);
      next = 0;
      count = n;
      error = nullptr;
      active = static_cast<int>(helpers.size());
      ++generation;
    }
    go.notify_all();
    work(0);
    std::unique_lock lock(m);
    finished.wait(lock, [&] { return active == 0; });
    if (error) std::rethrow_exception(error);
  }
};

WindowLoader::WindowLoader(std::vector<std::string> shard_paths, WindowSampler sampler, const LoaderOptions& options)
    : paths_(std::move(shard_paths)), sampler_(std::move(sampler)), window_(options.window),
      batch_(sampler_.local_batch()), memory_budget_(options.memory_budget_bytes), options_(options) {
  require(!paths_.empty(), "window loader: no shard files");
  require(window_ > 0, "window loader: window length ", window_, " must be > 0");
  require(memory_budget_ > 0, "window loader: memory budget ", memory_budget_, " bytes must be > 0");
  require(options.threads >= 1, "window loader: ", options.threads, " reading threads (must be >= 1)");
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
    // The chunk cache: at least the chunks of one batch (a window of T rows spans at most (T - 1) / rows + 2 chunks
    // of each dataset it reads).
    int64_t batch_chunk_bytes = 0;
    if (options_.chunk_reads)
      for (const Rows which : {Rows::timeseries, Rows::stimulus, Rows::label}) {
        int64_t most = 0;
        for (const ShardReader* r : shards)
          if (r->has_rows(which)) {
            const auto& L = r->chunk_layout(which);
            most = std::max(most, ((window_ - 1) / L.rows + 2) * L.buffer_bytes());
          }
        batch_chunk_bytes += batch_ * most;
      }
    hdf5.unlock();
    std::lock_guard lock(mutex_);
    parcels_ = parcels;
    stimulus_dim_ = stimulus_dim;
    labels_ = labels;
    depth_ = std::clamp<int64_t>(memory_budget_ / batch_bytes(), 1, kMaxDepth);
    if (options_.chunk_reads) {
      const int64_t wanted = options_.cache_bytes >= 0 ? options_.cache_bytes : memory_budget_ - depth_ * batch_bytes();
      cache_capacity_ = std::max(wanted, batch_chunk_bytes);
      cache_ = std::make_unique<Cache>(options_.threads);
      cache_->capacity = cache_capacity_;
    }
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
      if (cache_) {
        read_batch_chunks(shards, first_run, batch);
      } else {
        std::lock_guard hdf5(hdf5_mutex());
        read_batch(shards, first_run, batch);
      }
      check_finite(shards, first_run, batch);
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

namespace {

// The stimulus a window is paired with for the contrastive objective ([T, S] rows -> [S]): the one on screen at the
// window's first time point or, where none is (a gap between stimuli), the first to appear at t <= T / 4 (the first
// quarter); zeros (no stimulus: /runs/stim_embedding is 0 there) if none does.
// Why not the mean over the window (bfm before 2026-12-04): evaluation (launch/eval, `clip`) asks which stimulus
// was shown at a trial's onset, with the window starting there, and the BOLD response to that stimulus peaks ~5 s
// later, inside the window. A window of the quickstart corpus (12.8-24 s) spans 1-4 clips of 4-8 s (2-3 mostly);
// their mean blurs the pairing, and the later clips' responses fall partly after the window's end. Measured on the
// quickstart corpus (bench/RESULTS.md, 2026-12-04): zero-shot clip top-1 0.224 (mean) -> 0.290 (this rule),
// top-5 0.714 -> 0.881, chance 0.091 / 0.457.
void paired_stimulus(const float* rows, int64_t T, int64_t S, float* out) {
  auto shown = [&](int64_t t) {
    for (int64_t k = 0; k < S; ++k)
      if (rows[t * S + k] != 0.0f) return true;
    return false;
  };
  int64_t t = 0;
  while (t < T / 4 && !shown(t)) ++t;
  if (!shown(t)) {
    std::fill_n(out, S, 0.0f);
    return;
  }
  std::copy_n(rows + t * S, S, out);
}

// The most frequent label >= 0 (ties: the smallest), -1 if none; sorts `labels`.
int32_t majority(std::vector<int32_t>& labels) {
  std::sort(labels.begin(), labels.end());
  int32_t best = -1;
  int64_t best_count = 0;
  for (size_t a = 0; a < labels.size();) {
    size_t e = a;
    while (e < labels.size() && labels[e] == labels[a]) ++e;
    if (labels[a] >= 0 && static_cast<int64_t>(e - a) > best_count) {
      best = labels[a];
      best_count = static_cast<int64_t>(e - a);
    }
    a = e;
  }
  return best;
}

// The shard holding corpus run `run` (first_run: [shards + 1] prefix sums of the shards' run counts) and the run's
// index in it.
std::pair<size_t, int64_t> locate_run(const std::vector<int64_t>& first_run, int64_t run) {
  require(run >= 0 && run < first_run.back(), "window loader: the sampler's run ", run, " is not in the corpus (",
          first_run.back(), " runs)");
  const auto s = static_cast<size_t>(std::upper_bound(first_run.begin(), first_run.end(), run) -
                                     first_run.begin() - 1);
  return {s, run - first_run[s]};
}

}  // namespace

void WindowLoader::start_batch(WindowBatch& b) {
  b.windows = sampler_.next_batch();
  b.state_after = sampler_.state();
  b.timeseries.resize(static_cast<size_t>(batch_ * window_ * parcels_));  // every row is overwritten by the reader
  if (stimulus_dim_ > 0) b.stimulus.assign(static_cast<size_t>(batch_ * stimulus_dim_), 0.0f);
  if (labels_) b.label.assign(static_cast<size_t>(batch_), -1);
}

void WindowLoader::read_batch(const std::vector<ShardReader*>& shards, const std::vector<int64_t>& first_run,
                              WindowBatch& b) {
  const int64_t T = window_, P = parcels_, S = stimulus_dim_, B = batch_;
  start_batch(b);
  std::vector<float> stim(static_cast<size_t>(T * S));
  std::vector<int32_t> lab(static_cast<size_t>(T));
  for (int64_t i = 0; i < B; ++i) {
    const Window w = b.windows[static_cast<size_t>(i)];
    const auto [s, run] = locate_run(first_run, w.run);
    const ShardReader& shard = *shards[s];
    try {
      shard.read_window(run, w.start, T, b.timeseries.data() + i * T * P);
      if (S > 0 && shard.header().stimulus_dim > 0) {
        shard.read_stimulus(run, w.start, T, stim.data());
        paired_stimulus(stim.data(), T, S, b.stimulus.data() + i * S);
      }
      if (labels_ && shard.header().labels) {
        shard.read_labels(run, w.start, T, lab.data());
        b.label[static_cast<size_t>(i)] = majority(lab);
      }
    } catch (const Error& e) {
      fail(e.what(), " [window loader: corpus run ", w.run, ", start ", w.start, ", T ", T, ", row ", i,
           " of a batch]");
    }
  }
}

// A NaN or an infinity in the data would otherwise reach the model and look like a diverging run: named here by
// file, run, subject, time point and parcel. One pass over the batch, after it is read (the copy is hot in cache).
void WindowLoader::check_finite(const std::vector<ShardReader*>& shards, const std::vector<int64_t>& first_run,
                                const WindowBatch& b) const {
  const int64_t T = window_, P = parcels_;
  for (int64_t i = 0; i < batch_; ++i) {
    const float* x = b.timeseries.data() + i * T * P;
    int64_t bad = -1;
    for (int64_t e = 0; e < T * P; ++e)
      if (!std::isfinite(x[e])) {
        bad = e;
        break;
      }
    if (bad < 0) continue;
    const Window w = b.windows[static_cast<size_t>(i)];
    const auto [s, run] = locate_run(first_run, w.run);
    const ShardReader& shard = *shards[s];
    const Run& r = shard.runs()[static_cast<size_t>(run)];
    fail(shard.path(), ": run ", run, " (subject '", r.subject, "'", r.source.empty() ? "" : ", from " + r.source,
         "): /runs/timeseries holds ", x[bad], " at time point ", w.start + bad / P, " of the run, parcel ", bad % P,
         " (the data is not finite there; bfm inspect --verify lists every such value)");
  }
}

void WindowLoader::read_batch_chunks(const std::vector<ShardReader*>& shards, const std::vector<int64_t>& first_run,
                                     WindowBatch& b) {
  const int64_t T = window_, P = parcels_, S = stimulus_dim_, B = batch_;
  Cache& cache = *cache_;
  start_batch(b);

  // The pieces of the batch: rows [r0, r0 + n) of one chunk, to rows [t, t + n) of window i. Sorted by chunk (file
  // order), each chunk's pieces make one task: the chunk is read (or found in the cache) and its pieces copied out
  // while it is hot. Embeddings and labels go to staging rows, reduced per window at the end.
  std::vector<Piece> pieces;
  std::vector<int64_t> run_of(static_cast<size_t>(B));  // the shard's run of each window (named by errors)
  std::vector<char> has_stim(static_cast<size_t>(B), 0), has_label(static_cast<size_t>(B), 0);
  for (int64_t i = 0; i < B; ++i) {
    const Window w = b.windows[static_cast<size_t>(i)];
    const auto [s, run] = locate_run(first_run, w.run);
    const ShardReader& shard = *shards[s];
    const Run& r = shard.runs()[static_cast<size_t>(run)];
    if (w.start < 0 || w.start + T > r.length)
      fail(shard.path(), ": run ", run, " (subject '", r.subject, "'): window [", w.start, ", ", w.start + T,
           ") is outside its ", r.length, " time points [window loader: corpus run ", w.run, ", row ", i,
           " of a batch]");
    run_of[static_cast<size_t>(i)] = run;
    has_stim[static_cast<size_t>(i)] = S > 0 && shard.has_rows(Rows::stimulus);
    has_label[static_cast<size_t>(i)] = labels_ && shard.has_rows(Rows::label);
    for (const Rows which : {Rows::timeseries, Rows::stimulus, Rows::label}) {
      if ((which == Rows::stimulus && !has_stim[static_cast<size_t>(i)]) ||
          (which == Rows::label && !has_label[static_cast<size_t>(i)]))
        continue;
      const int64_t rows = shard.chunk_layout(which).rows;
      for (int64_t t = 0; t < T;) {
        const int64_t row = r.offset + w.start + t, c = row / rows, n = std::min(T - t, (c + 1) * rows - row);
        pieces.push_back({chunk_key(s, which, c), static_cast<uint32_t>(s), which, c, i, row - c * rows, n, t});
        t += n;
      }
    }
  }
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& c) {
    return a.key != c.key ? a.key < c.key : a.window < c.window;
  });
  struct Task {
    size_t first, end;               // its pieces
    unsigned char* bytes = nullptr;  // the chunk, in its cache slot
    bool read = false;               // to be read from the file
    bool mapped = false;             // to be checked and copied in the file's mapping (no cache slot)
  };
  std::vector<Task> tasks;
  for (size_t k = 0; k < pieces.size(); ++k)
    if (k == 0 || pieces[k].key != pieces[k - 1].key) tasks.push_back({k, k + 1});
    else tasks.back().end = k + 1;

  // Cached chunks are pinned for this batch; the others get a slot. Chunks that only HDF5 reads are read here, on
  // the loader's thread under the HDF5 lock; direct ones by the task, on any reading thread.
  ++cache.batch;
  int64_t hits = 0, reads = 0, bytes_read = 0;
  for (Task& task : tasks) {
    const Piece& p = pieces[task.first];
    const auto& layout = shards[p.shard]->chunk_layout(p.which);
    if (shards[p.shard]->mapped() && layout.direct) {  // the page cache is the cache; checked on first use
      task.mapped = true;
      ++reads;
      bytes_read += layout.buffer_bytes();
      continue;
    }
    if (Cache::Slot* slot = cache.find(p.key)) {
      task.bytes = slot->bytes.data.get();
      ++hits;
      continue;
    }
    const auto& L = shards[p.shard]->chunk_layout(p.which);
    task.bytes = cache.insert(p.key, static_cast<size_t>(L.buffer_bytes()))->bytes.data.get();
    task.read = true;
    ++reads;
    bytes_read += L.buffer_bytes();
  }
  const int threads = static_cast<int>(cache.helpers.size()) + 1;
  std::vector<double> read_s(static_cast<size_t>(threads), 0.0), copy_s(static_cast<size_t>(threads), 0.0);
  auto read_chunk = [&](const Task& task, int thread) {
    const Piece& p = pieces[task.first];
    const Window w = b.windows[static_cast<size_t>(p.window)];
    Stopwatch clock;
    try {
      shards[p.shard]->read_chunk(p.which, p.chunk, task.bytes, run_of[static_cast<size_t>(p.window)]);
    } catch (const Error& e) {
      fail(e.what(), " [window loader: corpus run ", w.run, ", start ", w.start, ", T ", T, ", row ", p.window,
           " of a batch]");
    }
    read_s[static_cast<size_t>(thread)] += clock.seconds();
  };
  std::vector<float> stim_rows(static_cast<size_t>(S > 0 ? B * T * S : 0));
  std::vector<int32_t> label_rows(static_cast<size_t>(labels_ ? B * T : 0));
  try {
    {
      std::unique_lock<std::mutex> hdf5;
      for (Task& task : tasks)
        if (task.read && !shards[pieces[task.first].shard]->chunk_layout(pieces[task.first].which).direct) {
          if (!hdf5.owns_lock()) hdf5 = std::unique_lock(hdf5_mutex());
          read_chunk(task, 0);
          task.read = false;
        }
    }
    cache.run(static_cast<int64_t>(tasks.size()), [&](int64_t k, int thread) {
      const Task& task = tasks[static_cast<size_t>(k)];
      const Piece& first = pieces[task.first];
      const ShardReader& shard = *shards[first.shard];
      const unsigned char* bytes = task.bytes;
      std::vector<unsigned char> fallback;
      if (task.mapped) {
        Stopwatch clock;
        const Window w = b.windows[static_cast<size_t>(first.window)];
        try {
          bytes = shard.mapped_chunk(first.which, first.chunk, run_of[static_cast<size_t>(first.window)]);
          if (!bytes) {  // past the mapped end of the file: read_chunk says what is wrong (or reads it, if it can)
            fallback.resize(static_cast<size_t>(shard.chunk_layout(first.which).buffer_bytes()));
            shard.read_chunk(first.which, first.chunk, fallback.data(), run_of[static_cast<size_t>(first.window)]);
            bytes = fallback.data();
          }
        } catch (const Error& e) {
          fail(e.what(), " [window loader: corpus run ", w.run, ", start ", w.start, ", T ", T, ", row ",
               first.window, " of a batch]");
        }
        read_s[static_cast<size_t>(thread)] += clock.seconds();
      } else if (task.read) {
        read_chunk(task, thread);
      }
      Stopwatch clock;
      CopyJob job{pieces.data(), task.first, task.end, bytes,
                  first.which == Rows::timeseries && shard.chunk_layout(Rows::timeseries).element_bytes == 2,
                  b.timeseries.data(), stim_rows.data(), label_rows.data(), T, P, S};
      if (task.mapped && fallback.empty()) {
        if (!run_guarded(copy_pieces, &job))
          fail(shard.path(), ": chunk ", first.chunk, " cannot be read through its mapping (the file was truncated "
               "or overwritten while open, or an I/O error) [window loader: corpus run ",
               b.windows[static_cast<size_t>(first.window)].run, "]");
      } else {
        copy_pieces(&job);
      }
      copy_s[static_cast<size_t>(thread)] += clock.seconds();
    });
  } catch (...) {
    for (const Task& task : tasks)  // not kept: unread, found corrupt, or read by this batch (to be safe)
      if (task.read) cache.erase(pieces[task.first].key);
    throw;
  }
  std::vector<int32_t> labels(static_cast<size_t>(T));
  for (int64_t i = 0; i < B; ++i) {
    if (has_stim[static_cast<size_t>(i)])
      paired_stimulus(stim_rows.data() + i * T * S, T, S, b.stimulus.data() + i * S);
    if (has_label[static_cast<size_t>(i)]) {
      std::copy_n(label_rows.data() + i * T, T, labels.begin());
      b.label[static_cast<size_t>(i)] = majority(labels);
    }
  }

  std::lock_guard lock(mutex_);
  stats_.chunks_read += reads;
  stats_.chunk_bytes_read += bytes_read;
  stats_.chunk_hits += hits;
  for (int t = 0; t < threads; ++t) {
    stats_.read_seconds += read_s[static_cast<size_t>(t)];
    stats_.copy_seconds += copy_s[static_cast<size_t>(t)];
  }
}

WindowBatch WindowLoader::next() {
  Stopwatch waited;
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

LoaderStats WindowLoader::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
