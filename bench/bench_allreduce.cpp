// The all-reduce of a gradient arena, as one blocking call after backward against gradient buckets started while
// backward runs (runtime/grad_buckets.h). Backward is a stand-in: a loop of FMAs over a 4 MiB activation buffer,
// calibrated to last about as long as the blocking all-reduce, split over the tensors in proportion to their size
// and run from the last tensor to the first, each followed by tensor_ready().
//   mpirun -np 2 bench_allreduce [n_floats=20000000] [bucket_mb=25[,5,...]] [steps=5]
// Prints one CSV row per config (rank 0): times are the median over steps of the slowest rank. allreduce_only is the
// blocking all-reduce with nothing else running.
//   backward_s   the compute loop alone (summed over its pieces)
//   exposed_s    communication after backward ended (blocking: the all-reduce; buckets: finish()'s waits)
//   total_s      backward, communication and the 1/size scaling
//   hidden_fraction  GradientBuckets::hidden_fraction() (0 for the blocking call)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/comm.h"
#include "base/error.h"
#include "runtime/grad_buckets.h"
#include "runtime/progress.h"
#include "runtime/world.h"

namespace {

using namespace bfm::runtime;

// The stand-in for backward: `passes` sweeps of an FMA over the activations (kept live through `sink`).
std::vector<float> activations(1 << 20, 1.0f);
float sink = 0;
void backward_work(int64_t passes) {
  for (int64_t p = 0; p < passes; ++p) {
    for (float& a : activations) a = a * 0.999f + 0.001f;
    sink += activations[static_cast<size_t>(p) % activations.size()];
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The slowest rank's value.
double slowest(Communicator& comm, double seconds) {
  comm.allreduce_max_host(&seconds, 1);
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int64_t n = argc > 1 ? std::atoll(argv[1]) : 20'000'000;
    std::vector<double> bucket_mbs;
    {
      std::stringstream list(argc > 2 ? argv[2] : "25");
      for (std::string item; std::getline(list, item, ',');) bucket_mbs.push_back(std::atof(item.c_str()));
    }
    const int steps = argc > 3 ? std::atoi(argv[3]) : 5;
    bfm::require(n > 0 && steps > 0 && !bucket_mbs.empty(), "usage: bench_allreduce [n_floats] [bucket_mb,...] [steps]");

    auto comm = make_communicator("mpi", false);  // starts MPI (runtime::world())
    const float scale = 1.0f / static_cast<float>(comm->size());

    // An arena of 160 tensors of uneven sizes (0.2 to 1.8 times the mean), like a transformer's weights and biases.
    std::vector<std::pair<int64_t, int64_t>> tensors;
    {
      const int count = 160;
      std::vector<double> weight;
      for (int k = 0; k < count; ++k) weight.push_back(0.2 + 1.6 * ((k * 37) % count) / double(count));
      double total = 0;
      for (double w : weight) total += w;
      int64_t at = 0;
      for (int k = 0; k < count; ++k) {
        const int64_t size = k + 1 == count ? n - at : std::min(n - at, static_cast<int64_t>(n * weight[size_t(k)] / total));
        tensors.emplace_back(at, size);
        at += size;
      }
    }
    std::vector<float> grads(static_cast<size_t>(n));
    const auto fill = [&] {
      for (int64_t i = 0; i < n; ++i) grads[size_t(i)] = static_cast<float>((i + comm->rank()) % 17) * 0.125f;
    };

    // The blocking all-reduce alone, and the number of backward passes that lasts as long (agreed on by all ranks).
    fill();
    comm->allreduce_sum(grads.data(), n);  // warm-up
    std::vector<double> allreduce_times;
    for (int s = 0; s < steps; ++s) {
      comm->barrier();
      bfm::Stopwatch watch;
      comm->allreduce_sum(grads.data(), n);
      allreduce_times.push_back(slowest(*comm, watch.seconds()));
    }
    const double allreduce_s = median(allreduce_times);
    double passes_total = 0;
    {
      backward_work(5);  // warm-up
      bfm::Stopwatch watch;
      backward_work(20);
      passes_total = std::max(1.0, 20 * allreduce_s / watch.seconds());
      comm->allreduce_max_host(&passes_total, 1);
    }
    // The passes of tensor k, in proportion to its size (cumulative rounding, so that they add up).
    std::vector<int64_t> passes_of(tensors.size());
    {
      double done = 0;
      int64_t given = 0;
      for (size_t k = 0; k < tensors.size(); ++k) {
        done += passes_total * static_cast<double>(tensors[k].second) / static_cast<double>(n);
        passes_of[k] = static_cast<int64_t>(done + 0.5) - given;
        given += passes_of[k];
      }
    }

    if (comm->rank() == 0)
      std::printf("config,ranks,n_floats,bucket_mb,n_buckets,backward_s,exposed_s,total_s,hidden_fraction\n");
    const auto row = [&](const char* config, double bucket_mb, int n_buckets, double backward, double exposed,
                         double total, double hidden) {
      if (comm->rank() == 0)
        std::printf("%s,%d,%lld,%g,%d,%.4f,%.4f,%.4f,%.3f\n", config, comm->size(), static_cast<long long>(n),
                    bucket_mb, n_buckets, backward, exposed, total, hidden);
      std::fflush(stdout);
    };

    row("allreduce_only", 0, 1, 0.0, allreduce_s, allreduce_s, 0.0);
    // Blocking: backward, then one all-reduce of the whole arena, then the scaling.
    {
      std::vector<double> backward, exposed, total;
      for (int s = 0; s < steps; ++s) {
        fill();
        comm->barrier();
        bfm::Stopwatch step;
        for (size_t k = tensors.size(); k-- > 0;) backward_work(passes_of[k]);
        const double backward_s = step.seconds();
        comm->allreduce_sum(grads.data(), n);
        const double exposed_s = step.seconds() - backward_s;
        for (float& g : grads) g *= scale;
        total.push_back(slowest(*comm, step.seconds()));
        backward.push_back(slowest(*comm, backward_s));
        exposed.push_back(slowest(*comm, exposed_s));
      }
      row("blocking", 0, 1, median(backward), median(exposed), median(total), 0.0);
    }

    // Buckets: each tensor marked ready after its share of backward.
    for (double bucket_mb : bucket_mbs) {
      GradientBuckets buckets(tensors, static_cast<int64_t>(bucket_mb * 1024 * 1024));
      std::vector<double> backward, exposed, total, hidden;
      for (int s = 0; s < steps; ++s) {
        fill();
        comm->barrier();
        bfm::Stopwatch step;
        double backward_s = 0;
        buckets.begin_step(grads.data(), *comm);
        for (size_t k = tensors.size(); k-- > 0;) {
          bfm::Stopwatch piece;
          backward_work(passes_of[k]);
          backward_s += piece.seconds();
          buckets.tensor_ready(k);
        }
        buckets.finish(scale);
        total.push_back(slowest(*comm, step.seconds()));
        backward.push_back(slowest(*comm, backward_s));
        exposed.push_back(slowest(*comm, buckets.exposed_seconds()));
        double h = buckets.hidden_fraction();
        comm->allreduce_sum_host(&h, 1);
        hidden.push_back(h / comm->size());
      }
      row("buckets", bucket_mb, buckets.n_buckets(), median(backward), median(exposed), median(total), median(hidden));
    }
    if (sink == 12345.0f) std::printf("#\n");  // keeps the stand-in's work from being optimised away
    return 0;
  } catch (const bfm::Error& e) {
    std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
    abort_world(1);
    return 1;
  }
}
