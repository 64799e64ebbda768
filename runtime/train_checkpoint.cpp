// The training checkpoint's writer and reader through HDF5's C API (the layout: docs/CHECKPOINT.md).
//
// One code path serves plain HDF5 and collective MPI-IO: `Ranks` is the communicator (a world of one without MPI or
// with one rank), and every step that may fail on some ranks ends in agree(), so that all ranks throw the same error
// or none does and no rank is left waiting in a collective call. Checks and checksums (which need MPI reductions)
// come before the file is opened; inside it there are only HDF5 calls that every rank makes in the same order.
//
// Datasets are contiguous, allocated at creation and never filled: the bytes on disk are exactly the ranks' writes.
// HDF5 checksums its own metadata (file format 1.8 and later: superblock v2, object header v2); the raw values carry
// our checksum (checksum() below), which is additive so that each rank sums its own range and one reduction adds
// the parts.
#ifdef BFM_WITH_HDF5

#include "runtime/train_checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/h5_handles.h"
#include "base/error.h"
#include "base/hash.h"
#include "runtime/world.h"

namespace bfm::runtime {

namespace {

namespace fs = std::filesystem;
namespace h5 = io::h5;

constexpr const char* kFormat = "bfm-train-checkpoint";
constexpr int32_t kFormatVersion = 1;
constexpr const char* kChecksumName = "splitmix64-sum";
// Values per dataset transfer (16 MiB of float32). Keeps MPI-IO requests far below 2^31 bytes, and on Linux a
// write of a few MiB at a time streams through the page cache several times faster than one of hundreds of MiB
// (measured on the development VM: 400 MB in one pwrite 1.3-7 s, in 16 MiB pieces 0.15-0.4 s).
constexpr int64_t kPiece = int64_t{1} << 22;

// Checksum of n values whose first is element `first` of its dataset (row-major): the sum, modulo 2^64, over the
// elements i of splitmix64's finaliser applied to (i << 32 | the value's 32 bits). Each term is a bijection of the
// value's bits, so changing any one value always changes the sum; a sum, so ranges add up to the whole.
uint64_t checksum(const float* x, int64_t first, int64_t n) {
  uint64_t sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
  for (int64_t k = 0; k < n; ++k) {
    uint32_t bits;
    std::memcpy(&bits, x + k, sizeof bits);
    sum += mix64((static_cast<uint64_t>(first + k) << 32) | bits);
  }
  return sum;
}

struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

// floor(n * r / ranks) without overflow (n = q * ranks + m).
int64_t scaled(int64_t n, int64_t r, int64_t ranks) { return n / ranks * r + n % ranks * r / ranks; }

// Rank r's part of [0, n) when n is split evenly over `ranks`.
Range even_part(int64_t n, int r, int ranks) { return {scaled(n, r, ranks), scaled(n, r + 1, ranks)}; }

// The processes that write or read one checkpoint together.
struct Ranks {
  int rank = 0, size = 1;
#ifdef BFM_WITH_MPI
  MPI_Comm comm = MPI_COMM_NULL;
#endif
  bool parallel() const { return size > 1; }

  // Every rank throws the lowest failing rank's message, or none when `mine` is "" everywhere.
  void agree(const std::string& mine) const {
#ifdef BFM_WITH_MPI
    if (parallel()) {
      int first = mine.empty() ? INT_MAX : rank;
      MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
      if (first == INT_MAX) return;
      uint64_t n = mine.size();
      MPI_Bcast(&n, 1, MPI_UINT64_T, first, comm);
      std::string message = rank == first ? mine : std::string(n, '\0');
      MPI_Bcast(message.data(), static_cast<int>(n), MPI_CHAR, first, comm);
      fail(message, " (rank ", first, ")");
    }
#endif
    if (!mine.empty()) throw Error(mine);
  }
  // Element-wise sum over the ranks, modulo 2^64.
  void sum(std::vector<uint64_t>& v) const {
#ifdef BFM_WITH_MPI
    if (parallel()) MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_UINT64_T, MPI_SUM, comm);
#endif
    (void)v;
  }
  int64_t max(int64_t x) const {
#ifdef BFM_WITH_MPI
    if (parallel()) MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_INT64_T, MPI_MAX, comm);
#endif
    return x;
  }
  // Every rank's two values, in rank order.
  std::vector<int64_t> gather(int64_t a, int64_t b) const {
    std::vector<int64_t> all = {a, b};
#ifdef BFM_WITH_MPI
    if (parallel()) {
      all.resize(2 * static_cast<size_t>(size));
      const int64_t mine[2] = {a, b};
      MPI_Allgather(mine, 2, MPI_INT64_T, all.data(), 2, MPI_INT64_T, comm);
    }
#endif
    return all;
  }
  void broadcast(std::string& s) const {
#ifdef BFM_WITH_MPI
    if (parallel()) {
      uint64_t n = s.size();
      MPI_Bcast(&n, 1, MPI_UINT64_T, 0, comm);
      s.resize(n);
      for (uint64_t at = 0; at < n; at += INT_MAX)  // MPI counts are ints
        MPI_Bcast(s.data() + at, static_cast<int>(std::min<uint64_t>(n - at, INT_MAX)), MPI_CHAR, 0, comm);
    }
#endif
    (void)s;
  }
};

Ranks ranks() {
  Ranks r;
#ifdef BFM_WITH_MPI
  const World& w = world();
  if (w.size > 1) {
    r.rank = w.rank;
    r.size = w.size;
    r.comm = w.comm;
  }
#endif
  return r;
}

// The moment range this rank holds in memory (`held`) and the one it writes and checksums (`own`): its shard when
// sharded, else all of the arena and its even part. The `own` ranges of all ranks tile [0, arena).
struct Moments {
  bool sharded = false;
  Range held, own;
  float* at(float* base, int64_t i) const { return base + (i - held.begin); }
};

// Checks t against itself and the other ranks; "" or the reason (after every rank took part).
std::string check_tensors(const Ranks& r, const CheckpointTensors& t, const std::string& path, Moments& mo) {
  std::string bad;
  const int64_t A = t.arena_size;
  if (t.tensors.empty()) bad = path + ": no parameter table given";
  else if (!t.params || ((!t.m || !t.v) && !(t.shard_begin >= 0 && t.shard_begin == t.shard_end)))
    bad = path + ": a null parameter or moment arena";
  mo.sharded = t.shard_begin >= 0 || t.shard_end >= 0;
  if (bad.empty() && mo.sharded && !(0 <= t.shard_begin && t.shard_begin <= t.shard_end && t.shard_end <= A))
    bad = path + ": moment shard [" + std::to_string(t.shard_begin) + ", " + std::to_string(t.shard_end) +
          ") is not inside the arena [0, " + std::to_string(A) + ")";
  if (bad.empty())
    for (const auto& p : t.tensors)
      if (p.name.empty() || p.name.find('/') != std::string::npos || p.name == "." || p.name == "..") {
        bad = path + ": tensor name '" + p.name + "' cannot be an HDF5 dataset name";
        break;
      }
  mo.held = mo.sharded ? Range{t.shard_begin, t.shard_end} : Range{0, A};
  mo.own = mo.sharded ? mo.held : even_part(A, r.rank, r.size);
  // Every rank sharded or none, and the shards in rank order tiling the arena.
  const std::vector<int64_t> all = r.gather(mo.sharded ? mo.own.begin : -1, mo.sharded ? mo.own.end : -1);
  int64_t at = 0;
  for (int k = 0; bad.empty() && k < r.size; ++k) {
    const int64_t b = all[2 * static_cast<size_t>(k)], e = all[2 * static_cast<size_t>(k) + 1];
    if ((b >= 0) != mo.sharded) {
      bad = path + ": rank " + std::to_string(k) + (b >= 0 ? " has" : " has no") + " moment shard and rank " +
            std::to_string(r.rank) + (mo.sharded ? " has one" : " has none");
    } else if (mo.sharded && b != at) {
      bad = path + ": moment shards must tile the arena [0, " + std::to_string(A) + ") in rank order; rank " +
            std::to_string(k) + " has [" + std::to_string(b) + ", " + std::to_string(e) + "), expected it to begin at " +
            std::to_string(at);
    }
    at = e;
  }
  if (bad.empty() && mo.sharded && at != A)
    bad = path + ": moment shards end at " + std::to_string(at) + ", the arena at " + std::to_string(A);
  return bad;
}

// Rank owning tensor p (the rank whose even part of the arena holds its first value): it writes and verifies it.
int owner(const NamedTensor& p, int64_t arena, int ranks) {
  for (int r = ranks - 1; r > 0; --r)
    if (p.offset >= scaled(arena, r, ranks)) return r;
  return 0;
}

std::string ckpt_name(int64_t step) {
  char name[40];
  std::snprintf(name, sizeof name, "ckpt-%08lld.h5", static_cast<long long>(step));
  return name;
}

// A fixed-length, null-padded UTF-8 string type of `size` bytes (as the shard format's strings).
h5::Id string_type(size_t size) {
  h5::Id t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), std::max<size_t>(size, 1));
  H5Tset_strpad(t.get(), H5T_STR_NULLPAD);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  return t;
}

// File access: HDF5 1.8+ format (checksummed metadata), MPI-IO across the ranks when there are several.
h5::Id file_access(const Ranks& r) {
  h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  bool ok = fapl.ok() && H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST) >= 0;
#ifdef BFM_WITH_MPI
  if (ok && r.parallel())
    ok = H5Pset_fapl_mpio(fapl.get(), r.comm, MPI_INFO_NULL) >= 0 && H5Pset_coll_metadata_write(fapl.get(), true) >= 0;
#endif
  (void)r;
  return ok ? std::move(fapl) : h5::Id();
}

// An open checkpoint file and its transfer properties: `collective` for the large moment datasets, `independent`
// for what one rank moves alone (its tensors, the small state datasets).
struct File {
  std::string path;  // the name errors give
  h5::Id file, collective, independent;

  [[noreturn]] void h5_fail(const std::string& what) const { fail(path, ": ", what, ": ", h5::reason()); }

  void set_up_transfers(const Ranks& r) {
    collective = h5::Id(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
    independent = h5::Id(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
    bool ok = collective.ok() && independent.ok();
#ifdef BFM_WITH_MPI
    if (ok && r.parallel()) ok = H5Pset_dxpl_mpio(collective.get(), H5FD_MPIO_COLLECTIVE) >= 0;
#endif
    (void)r;
    if (!ok) h5_fail("cannot set up the transfer properties");
  }

  h5::Id group(const char* name) {
    h5::Id g(H5Gcreate2(file.get(), name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    if (!g.ok()) h5_fail(std::string("cannot create group ") + name);
    return g;
  }

  // A contiguous dataset allocated now and never filled (an empty `dims` makes a scalar).
  h5::Id dataset(const std::string& name, hid_t type, const std::vector<hsize_t>& dims) {
    h5::Id space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                 H5Sclose);
    h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    if (!space.ok() || !dcpl.ok() || H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS) < 0 ||
        H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY) < 0 || H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) < 0)
      h5_fail("cannot set up dataset " + name);
    h5::Id d(H5Dcreate2(file.get(), name.c_str(), type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) h5_fail("cannot create dataset " + name);
    return d;
  }

  // A scalar attribute of `object` (every rank writes the same value).
  void attribute(hid_t object, const std::string& where, const char* name, hid_t filetype, hid_t memtype,
                 const void* value) {
    h5::Id space(H5Screate(H5S_SCALAR), H5Sclose);
    h5::Id a(H5Acreate2(object, name, filetype, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!a.ok() || H5Awrite(a.get(), memtype, value) < 0) h5_fail("cannot write attribute " + where + name);
  }
  void attribute(hid_t object, const std::string& where, const char* name, const std::string& value) {
    h5::Id t = string_type(value.size());
    const std::string padded = value.empty() ? std::string(1, '\0') : value;
    attribute(object, where, name, t.get(), t.get(), padded.data());
  }
  template <class T>
  T read_attribute(hid_t object, const std::string& where, const char* name, hid_t memtype) const {
    T value{};
    h5::Id a(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
    if (!a.ok() || H5Aread(a.get(), memtype, &value) < 0) h5_fail("cannot read attribute " + where + name);
    return value;
  }
  std::string read_string_attribute(hid_t object, const std::string& where, const char* name) const {
    h5::Id a(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
    h5::Id t(a.ok() ? H5Aget_type(a.get()) : -1, H5Tclose);
    if (!t.ok() || H5Tget_class(t.get()) != H5T_STRING || H5Tis_variable_str(t.get()) != 0)
      h5_fail("attribute " + where + name + " is missing or not a fixed-length string");
    std::string s(H5Tget_size(t.get()), '\0');
    if (H5Aread(a.get(), t.get(), s.data()) < 0) h5_fail("cannot read attribute " + where + name);
    return s.substr(0, s.find_last_not_of('\0') + 1);
  }

  // A small dataset that rank 0 writes; the other ranks take part selecting nothing.
  // It carries a "checksum" attribute: FNV-1a 64 of its bytes as in memory (little-endian hosts: as in the file).
  void small_dataset(const Ranks& r, const std::string& name, hid_t filetype, hid_t memtype,
                     const std::vector<hsize_t>& dims, const void* data, size_t bytes) {
    h5::Id d = dataset(name, filetype, dims);
    const uint64_t sum = fnv1a64(data, bytes);
    attribute(d.get(), name + ":", "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &sum);
    h5::Id space(H5Dget_space(d.get()), H5Sclose);
    hsize_t n = 1;
    for (hsize_t k : dims) n *= k;
    if ((r.rank != 0 || n == 0) && H5Sselect_none(space.get()) < 0) h5_fail("cannot select in " + name);
    static const char nothing[8] = {};
    if (H5Dwrite(d.get(), memtype, space.get(), space.get(), collective.get(), r.rank == 0 && n > 0 ? data : nothing) < 0)
      h5_fail("cannot write dataset " + name);
  }
  void string_dataset(const Ranks& r, const std::string& name, const std::string& value) {
    h5::Id t = string_type(value.size());
    const std::string padded = value.empty() ? std::string(1, '\0') : value;
    small_dataset(r, name, t.get(), t.get(), {}, padded.data(), padded.size());
  }
  // A small dataset's bytes against its checksum attribute (checkpoints written before it had none: nothing to check).
  void check_bytes(const std::string& name, const void* data, size_t bytes) const {
    h5::Id d(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) h5_fail("cannot open dataset " + name);
    if (H5Aexists(d.get(), "checksum") <= 0) return;
    const auto stored = read_attribute<uint64_t>(d.get(), name + ":", "checksum", H5T_NATIVE_UINT64);
    require(stored == fnv1a64(data, bytes), path, ": ", name, " does not match its checksum (the file is corrupt)");
  }
  std::string read_string_dataset(const std::string& name) const {
    h5::Id d(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    h5::Id t(d.ok() ? H5Dget_type(d.get()) : -1, H5Tclose);
    if (!t.ok() || H5Tget_class(t.get()) != H5T_STRING || H5Tis_variable_str(t.get()) != 0)
      h5_fail("dataset " + name + " is missing or not a fixed-length string");
    std::string s(H5Tget_size(t.get()), '\0');
    if (H5Dread(d.get(), t.get(), H5S_ALL, H5S_ALL, independent.get(), s.data()) < 0)
      h5_fail("cannot read dataset " + name);
    check_bytes(name, s.data(), s.size());
    return s.substr(0, s.find_last_not_of('\0') + 1);
  }

  // Moves values [first, first + n) of the 1-D float32 dataset `dset` from (writing) or to `data`, in `pieces`
  // collective calls of at most kPiece values (`pieces` is the same on every rank; surplus calls select nothing).
  // Makes every call even after a failure; returns "" or the first failure.
  std::string move_range(bool writing, hid_t dset, const std::string& name, int64_t first, int64_t n, float* data,
                         int64_t pieces) const {
    std::string reason;
    for (int64_t k = 0; k < pieces; ++k) {
      const int64_t b = std::min(n, k * kPiece), e = std::min(n, (k + 1) * kPiece);
      h5::Id fspace(H5Dget_space(dset), H5Sclose);
      const hsize_t start = static_cast<hsize_t>(first + b), count = static_cast<hsize_t>(e - b);
      const hsize_t mdim = std::max<hsize_t>(count, 1);
      h5::Id mspace(H5Screate_simple(1, &mdim, nullptr), H5Sclose);
      herr_t rc = count > 0 ? H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr)
                            : std::min(H5Sselect_none(fspace.get()), H5Sselect_none(mspace.get()));
      static float nothing[1];
      float* p = count > 0 ? data + b : nothing;
      if (rc >= 0) {
        rc = writing ? H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace.get(), fspace.get(), collective.get(), p)
                     : H5Dread(dset, H5T_NATIVE_FLOAT, mspace.get(), fspace.get(), collective.get(), p);
      }
      if (rc < 0 && reason.empty())
        reason = path + ": cannot " + (writing ? "write" : "read") + " values " + std::to_string(first + b) + ".." +
                 std::to_string(first + e) + " of " + name + ": " + h5::reason();
    }
    return reason;
  }

  // Moves a whole tensor (row-major at `data`) from (writing) or to the dataset `dset` of that shape, in pieces of
  // whole rows of about kPiece values; the number of calls depends only on the shape. Throws.
  void move_tensor(bool writing, hid_t dset, const std::string& name, const std::vector<int64_t>& shape, float* data,
                   hid_t dxpl) const {
    auto move = [&](hid_t mspace, hid_t fspace, float* p) {
      const herr_t rc = writing ? H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, p)
                                : H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, p);
      if (rc < 0) h5_fail(std::string("cannot ") + (writing ? "write" : "read") + " dataset " + name);
    };
    int64_t row = 1;
    for (size_t k = 1; k < shape.size(); ++k) row *= shape[k];
    if (shape.empty() || shape[0] == 0 || row == 0) return move(H5S_ALL, H5S_ALL, data);
    const int64_t rows_per_piece = std::max<int64_t>(1, kPiece / row);
    std::vector<hsize_t> start(shape.size(), 0), count(shape.begin(), shape.end());
    for (int64_t r0 = 0; r0 < shape[0]; r0 += rows_per_piece) {
      start[0] = static_cast<hsize_t>(r0);
      count[0] = static_cast<hsize_t>(std::min(rows_per_piece, shape[0] - r0));
      h5::Id fspace(H5Dget_space(dset), H5Sclose);
      h5::Id mspace(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose);
      if (!fspace.ok() || !mspace.ok() ||
          H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0)
        h5_fail("cannot select rows of " + name);
      move(mspace.get(), fspace.get(), data + r0 * row);
    }
  }
};

// The ranks' training states must agree (rank 0's metrics are the ones written); "" or the first rank that differs.
std::string check_state(const Ranks& r, const TrainState& s, const std::string& path) {
  uint64_t h = kFnv1aBasis;  // FNV-1a: the digest by which ranks compare their states
  for (int64_t x : {s.step, s.skipped_steps, s.skipped_in_a_row}) h = fnv1a64(&x, sizeof x, h);
  for (uint64_t x : {s.sampler_epoch, s.sampler_batch, static_cast<uint64_t>(s.rng_state.size())})
    h = fnv1a64(&x, sizeof x, h);
  h = fnv1a64(s.rng_state.data(), s.rng_state.size() * sizeof(uint64_t), h);
  h = fnv1a64(s.config_json.data(), s.config_json.size(), h);
  const std::vector<int64_t> all = r.gather(static_cast<int64_t>(h), s.step);
  for (int k = 1; k < r.size; ++k)
    if (all[2 * static_cast<size_t>(k)] != all[0])
      return path + ": rank " + std::to_string(k) + "'s training state (step " +
             std::to_string(all[2 * static_cast<size_t>(k) + 1]) + ") differs from rank 0's (step " +
             std::to_string(all[1]) + ") in the step, skip counters, sampler, RNG streams or config";
  if (s.step < 0) return path + ": step " + std::to_string(s.step) + " (must be >= 0)";
  return "";
}

// POSIX helpers of the publishing steps; each returns "" or the reason.
std::string fsync_path(const std::string& p, bool directory) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  std::string reason;
  if (fd < 0 || ::fsync(fd) != 0) reason = "cannot fsync " + p + ": " + std::strerror(errno);
  if (fd >= 0) ::close(fd);
  return reason;
}

std::string rename_path(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) return "cannot rename " + from + " to " + to + ": " + std::strerror(errno);
  return "";
}

// dir/latest := `name`, atomically (a temporary file, fsynced, renamed, and the folder fsynced).
std::string write_latest(const fs::path& dir, const std::string& name) {
  const std::string tmp = (dir / ".latest.tmp").string(), latest = (dir / "latest").string();
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return "cannot create " + tmp + ": " + std::strerror(errno);
  const std::string line = name + "\n";
  std::string reason;
  if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()) || ::fsync(fd) != 0)
    reason = "cannot write " + tmp + ": " + std::strerror(errno);
  ::close(fd);
  if (reason.empty()) reason = rename_path(tmp, latest);
  if (reason.empty()) reason = fsync_path(dir.string(), true);
  if (!reason.empty()) std::remove(tmp.c_str());
  return reason;
}

// The step of a checkpoint file name "ckpt-<8 or more digits>.h5", or -1.
int64_t step_of(const std::string& name) {
  if (name.size() < 5 + 8 + 3 || name.rfind("ckpt-", 0) != 0 || name.substr(name.size() - 3) != ".h5") return -1;
  const std::string digits = name.substr(5, name.size() - 8);
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(digits);
}

// Deletes the checkpoints of dir beyond the newest `keep` by step (never `written`) and stale .partial files.
std::string prune(const fs::path& dir, const std::string& written, int keep) {
  std::error_code ec;
  std::vector<std::pair<int64_t, std::string>> ckpts;
  std::vector<std::string> doomed;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name != written && step_of(name) >= 0) ckpts.emplace_back(step_of(name), name);
    if (name.rfind(".ckpt-", 0) == 0 && name.size() > 11 && name.substr(name.size() - 11) == ".h5.partial")
      doomed.push_back(name);
  }
  if (ec) return "cannot list " + dir.string() + ": " + ec.message();
  std::sort(ckpts.rbegin(), ckpts.rend());
  for (size_t i = static_cast<size_t>(keep - 1); i < ckpts.size(); ++i) doomed.push_back(ckpts[i].second);
  for (const auto& name : doomed)
    if (!fs::remove(dir / name, ec) && ec) return "cannot delete " + (dir / name).string() + ": " + ec.message();
  return "";
}

}  // namespace

std::string write_train_checkpoint(const std::string& dir, const CheckpointTensors& t, const TrainState& s, int keep) {
  h5::Quiet quiet;
  const Ranks r = ranks();
  const std::string name = ckpt_name(s.step);
  const std::string path = (fs::path(dir) / name).string(), tmp = (fs::path(dir) / ("." + name + ".partial")).string();

  // Checks, checksums and the state to write: every rank, before the file exists.
  Moments mo;
  std::string bad = check_tensors(r, t, path, mo);
  if (bad.empty() && keep < 1) bad = path + ": keep " + std::to_string(keep) + " (must be >= 1)";
  r.agree(bad);
  r.agree(check_state(r, s, path));
  std::string metrics = s.metrics_jsonl;
  r.broadcast(metrics);
  const auto& params = t.tensors;
  const int64_t A = t.arena_size;
  std::vector<uint64_t> sums(params.size() + 2, 0);  // each tensor, then m and v
  for (size_t k = 0; k < params.size(); ++k)
    if (owner(params[k], A, r.size) == r.rank) sums[k] = checksum(t.params + params[k].offset, 0, params[k].size);
  if (mo.own.size() > 0) {
    sums[params.size()] = checksum(mo.at(t.m, mo.own.begin), mo.own.begin, mo.own.size());
    sums[params.size() + 1] = checksum(mo.at(t.v, mo.own.begin), mo.own.begin, mo.own.size());
  }
  r.sum(sums);
  const int64_t pieces = r.max(std::max<int64_t>(1, (mo.own.size() + kPiece - 1) / kPiece));

  std::error_code ec;
  if (r.rank == 0 && !fs::is_directory(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) bad = path + ": cannot create the folder " + dir + ": " + ec.message();
  }
  r.agree(bad);

  File f;
  f.path = path;
  std::string reason;
  try {
    h5::Id fapl = file_access(r);
    if (!fapl.ok()) f.h5_fail("cannot set up file access");
    f.file = h5::Id(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
    if (!f.file.ok()) f.h5_fail("cannot create " + tmp);
    f.set_up_transfers(r);

    const int64_t n_tensors = static_cast<int64_t>(params.size());
    f.attribute(f.file.get(), "/", "format", kFormat);
    f.attribute(f.file.get(), "/", "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &kFormatVersion);
    f.attribute(f.file.get(), "/", "arena_size", H5T_STD_I64LE, H5T_NATIVE_INT64, &A);
    f.attribute(f.file.get(), "/", "n_tensors", H5T_STD_I64LE, H5T_NATIVE_INT64, &n_tensors);
    f.attribute(f.file.get(), "/", "checksum", kChecksumName);

    // Parameters: every rank creates every dataset (metadata is collective); each owner writes its tensors alone.
    f.group("/params");
    for (size_t k = 0; k < params.size(); ++k) {
      const auto& p = params[k];
      const std::string dname = "/params/" + p.name;
      h5::Id d = f.dataset(dname, H5T_IEEE_F32LE, std::vector<hsize_t>(p.shape.begin(), p.shape.end()));
      f.attribute(d.get(), dname + ":", "offset", H5T_STD_I64LE, H5T_NATIVE_INT64, &p.offset);
      f.attribute(d.get(), dname + ":", "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &sums[k]);
      if (owner(p, A, r.size) == r.rank && p.size > 0)
        f.move_tensor(true, d.get(), dname, p.shape, t.params + p.offset, f.independent.get());
    }

    // Moments: the full arena, each rank its own range, collectively.
    f.group("/optimizer");
    for (int which = 0; which < 2; ++which) {
      const std::string dname = which == 0 ? "/optimizer/m" : "/optimizer/v";
      float* base = which == 0 ? t.m : t.v;
      h5::Id d = f.dataset(dname, H5T_IEEE_F32LE, {static_cast<hsize_t>(A)});
      f.attribute(d.get(), dname + ":", "checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &sums[params.size() + which]);
      const std::string moved = f.move_range(true, d.get(), dname, mo.own.begin, mo.own.size(),
                                             mo.own.size() > 0 ? mo.at(base, mo.own.begin) : nullptr, pieces);
      if (!moved.empty()) throw Error(moved);
    }

    // The training state: scalars as attributes of /state (every rank writes the same), the rest as datasets.
    h5::Id state = f.group("/state");
    const int32_t world_size = r.size;
    f.attribute(state.get(), "/state:", "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &s.step);
    f.attribute(state.get(), "/state:", "skipped_steps", H5T_STD_I64LE, H5T_NATIVE_INT64, &s.skipped_steps);
    f.attribute(state.get(), "/state:", "skipped_in_a_row", H5T_STD_I64LE, H5T_NATIVE_INT64, &s.skipped_in_a_row);
    f.attribute(state.get(), "/state:", "sampler_epoch", H5T_STD_U64LE, H5T_NATIVE_UINT64, &s.sampler_epoch);
    f.attribute(state.get(), "/state:", "sampler_batch", H5T_STD_U64LE, H5T_NATIVE_UINT64, &s.sampler_batch);
    f.attribute(state.get(), "/state:", "world_size", H5T_STD_I32LE, H5T_NATIVE_INT32, &world_size);
    f.small_dataset(r, "/state/rng_state", H5T_STD_U64LE, H5T_NATIVE_UINT64, {s.rng_state.size()},
                    s.rng_state.data(), s.rng_state.size() * sizeof(uint64_t));
    f.string_dataset(r, "/state/config_json", s.config_json);
    f.string_dataset(r, "/state/metrics_jsonl", metrics);

    // Under MPI-IO a flush syncs every rank's writes to storage (MPI_File_sync); the close then is only metadata.
    if (H5Fflush(f.file.get(), H5F_SCOPE_GLOBAL) < 0) f.h5_fail("cannot flush " + tmp);
  } catch (const Error& e) {
    reason = e.what();  // a collective call failed: the other ranks most likely failed in the same call
  }
  if (!f.file.close() && reason.empty()) reason = path + ": cannot close " + tmp + ": " + h5::reason();
  if (!reason.empty() && r.rank == 0) std::remove(tmp.c_str());
  r.agree(reason);

  // Publish (rank 0): the data on disk before the name, the name before latest, latest before deleting anything.
  if (r.rank == 0) {
    reason = fsync_path(tmp, false);
    if (reason.empty()) reason = rename_path(tmp, path);
    if (!reason.empty()) std::remove(tmp.c_str());
    if (reason.empty()) reason = fsync_path(dir, true);
    if (reason.empty()) reason = write_latest(dir, name);
    if (reason.empty()) reason = prune(dir, name, keep);
    if (!reason.empty()) reason = path + ": " + reason;
  }
  r.agree(reason);
  return path;
}

std::string latest_train_checkpoint(const std::string& dir) {
  const fs::path latest = fs::path(dir) / "latest";
  std::error_code ec;
  if (!fs::exists(latest, ec)) {
    require(!ec, latest.string(), ": cannot check whether it exists: ", ec.message());
    return "";
  }
  std::ifstream in(latest);
  std::string name;
  require(in.good() && std::getline(in, name), latest.string(), ": cannot read it");
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ' || name.back() == '\t')) name.pop_back();
  require(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..", latest.string(),
          ": does not hold a checkpoint file name (\"", name, "\")");
  const std::string path = (fs::path(dir) / name).string();
  require(fs::is_regular_file(path, ec), latest.string(), " names ", path, ", which does not exist");
  h5::Quiet quiet;
  h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) fail(latest.string(), " names ", path, ", which cannot be read as HDF5: ", h5::reason());
  File f;
  f.path = path;
  f.file = std::move(file);
  std::string format;
  try {
    format = f.read_string_attribute(f.file.get(), "/", "format");
  } catch (const Error& e) {
    fail(latest.string(), " names ", path, ", which cannot be read: ", e.what());
  }
  require(format == kFormat, latest.string(), " names ", path, ", which is not a bfm training checkpoint (format '",
          format, "')");
  return path;
}

std::vector<std::string> train_checkpoint_candidates(const std::string& dir, std::vector<std::string>& notes) {
  std::vector<std::string> paths;
  const fs::path latest = fs::path(dir) / "latest";
  std::error_code ec;
  if (fs::exists(latest, ec)) {
    std::ifstream in(latest);
    std::string name;
    std::getline(in, name);
    while (!name.empty() && (name.back() == '\r' || name.back() == ' ' || name.back() == '\t')) name.pop_back();
    if (step_of(name) < 0)
      notes.push_back(latest.string() + " does not hold a checkpoint file name");
    else if (!fs::is_regular_file(fs::path(dir) / name, ec))
      notes.push_back(latest.string() + " names " + (fs::path(dir) / name).string() + ", which does not exist");
    else
      paths.push_back((fs::path(dir) / name).string());
  }
  std::vector<std::pair<int64_t, std::string>> ckpts;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (step_of(name) >= 0 && entry.is_regular_file(ec)) ckpts.emplace_back(step_of(name), entry.path().string());
  }
  std::sort(ckpts.rbegin(), ckpts.rend());
  for (const auto& [step, path] : ckpts)
    if (std::find(paths.begin(), paths.end(), path) == paths.end()) paths.push_back(path);
  return paths;
}

std::string train_checkpoint_config(const std::string& path) {
  h5::Quiet quiet;
  h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) fail(path, ": cannot open it as HDF5: ", h5::reason());
  File f;
  f.path = path;
  f.file = std::move(file);
  f.set_up_transfers(Ranks{});  // this rank alone: plain (independent) transfers
  require(H5Lexists(f.file.get(), "/state/config_json", H5P_DEFAULT) > 0, path, ": no /state/config_json");
  return f.read_string_dataset("/state/config_json");
}

TrainState read_train_checkpoint(const std::string& path, const CheckpointTensors& t) {
  h5::Quiet quiet;
  const Ranks r = ranks();
  Moments mo;
  r.agree(check_tensors(r, t, path, mo));
  const auto& params = t.tensors;
  const int64_t A = t.arena_size;
  const int64_t pieces = r.max(std::max<int64_t>(1, (mo.held.size() + kPiece - 1) / kPiece));

  File f;
  f.path = path;
  std::string reason;
  {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) reason = path + ": no such file";
    h5::Id fapl = file_access(r);
    r.agree(reason);
    f.file = h5::Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
    if (!f.file.ok()) reason = path + ": cannot open it as HDF5: " + h5::reason();
    r.agree(reason);
  }
  TrainState s;
  std::vector<uint64_t> stored(params.size() + 2, 0);  // the checksums in the file: each tensor, m, v
  // Metadata (each rank reads it alone; the file is the same for all, so all reach the same verdict).
  try {
    f.set_up_transfers(r);
    const hid_t root = f.file.get();
    const std::string format = H5Aexists(root, "format") > 0 ? f.read_string_attribute(root, "/", "format") : "";
    require(format == kFormat, path, ": not a bfm training checkpoint (root attribute format is '", format,
            "', expected '", kFormat, "')");
    const auto version = f.read_attribute<int32_t>(root, "/", "format_version", H5T_NATIVE_INT32);
    require(version == kFormatVersion, path, ": format_version ", version, ", this build reads ", kFormatVersion);
    require(f.read_string_attribute(root, "/", "checksum") == kChecksumName, path, ": unknown checksum");

    for (size_t k = 0; k < params.size(); ++k) {
      const auto& p = params[k];
      const std::string dname = "/params/" + p.name;
      require(H5Lexists(root, dname.c_str(), H5P_DEFAULT) > 0, path, ": tensor '", p.name,
              "' of the model is not in the checkpoint (a checkpoint of another model config?)");
      h5::Id d(H5Dopen2(root, dname.c_str(), H5P_DEFAULT), H5Dclose);
      if (!d.ok()) f.h5_fail("cannot open dataset " + dname);
      h5::Id space(H5Dget_space(d.get()), H5Sclose);
      const int nd = H5Sget_simple_extent_ndims(space.get());
      std::vector<hsize_t> dims(static_cast<size_t>(std::max(nd, 0)));
      if (nd < 0 || H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
        f.h5_fail("cannot read the shape of " + dname);
      const std::vector<int64_t> shape(dims.begin(), dims.end());
      require(shape == p.shape, path, ": tensor '", p.name, "' has shape ", shape_string(shape),
              " in the checkpoint, the model needs ", shape_string(p.shape),
              " (a checkpoint of another model config?)");
      const auto offset = f.read_attribute<int64_t>(d.get(), dname + ":", "offset", H5T_NATIVE_INT64);
      require(offset == p.offset, path, ": tensor '", p.name, "' is at arena offset ", offset,
              " in the checkpoint, the model has it at ", p.offset);
      stored[k] = f.read_attribute<uint64_t>(d.get(), dname + ":", "checksum", H5T_NATIVE_UINT64);
    }
    h5::Id group(H5Gopen2(root, "/params", H5P_DEFAULT), H5Gclose);
    H5G_info_t info{};
    if (!group.ok() || H5Gget_info(group.get(), &info) < 0) f.h5_fail("cannot list /params");
    if (info.nlinks != params.size()) {  // a tensor the model does not have: name the first one
      std::string extra;
      for (hsize_t i = 0; i < info.nlinks && extra.empty(); ++i) {
        char buf[1024] = {};
        H5Lget_name_by_idx(group.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, buf, sizeof buf, H5P_DEFAULT);
        if (!t.has(buf)) extra = buf;
      }
      fail(path, ": tensor '", extra, "' of the checkpoint is not in the model (a checkpoint of another model config?)");
    }
    const auto arena = f.read_attribute<int64_t>(root, "/", "arena_size", H5T_NATIVE_INT64);
    require(arena == A, path, ": an arena of ", arena, " floats, the model's has ", A);
    for (int which = 0; which < 2; ++which) {
      const std::string dname = which == 0 ? "/optimizer/m" : "/optimizer/v";
      h5::Id d(H5Dopen2(root, dname.c_str(), H5P_DEFAULT), H5Dclose);
      if (!d.ok()) f.h5_fail("cannot open dataset " + dname);
      h5::Id space(H5Dget_space(d.get()), H5Sclose);
      hsize_t n = 0;
      require(H5Sget_simple_extent_ndims(space.get()) == 1 && H5Sget_simple_extent_dims(space.get(), &n, nullptr) == 1 &&
                  static_cast<int64_t>(n) == A,
              path, ": ", dname, " is not [", A, "] floats");
      stored[params.size() + which] = f.read_attribute<uint64_t>(d.get(), dname + ":", "checksum", H5T_NATIVE_UINT64);
    }

    h5::Id state(H5Gopen2(root, "/state", H5P_DEFAULT), H5Gclose);
    if (!state.ok()) f.h5_fail("cannot open group /state");
    s.step = f.read_attribute<int64_t>(state.get(), "/state:", "step", H5T_NATIVE_INT64);
    s.skipped_steps = f.read_attribute<int64_t>(state.get(), "/state:", "skipped_steps", H5T_NATIVE_INT64);
    s.skipped_in_a_row = f.read_attribute<int64_t>(state.get(), "/state:", "skipped_in_a_row", H5T_NATIVE_INT64);
    s.sampler_epoch = f.read_attribute<uint64_t>(state.get(), "/state:", "sampler_epoch", H5T_NATIVE_UINT64);
    s.sampler_batch = f.read_attribute<uint64_t>(state.get(), "/state:", "sampler_batch", H5T_NATIVE_UINT64);
    s.world_size = f.read_attribute<int32_t>(state.get(), "/state:", "world_size", H5T_NATIVE_INT32);
    {
      h5::Id d(H5Dopen2(root, "/state/rng_state", H5P_DEFAULT), H5Dclose);
      h5::Id space(d.ok() ? H5Dget_space(d.get()) : -1, H5Sclose);
      const hssize_t n = space.ok() ? H5Sget_simple_extent_npoints(space.get()) : -1;
      if (n < 0) f.h5_fail("cannot open dataset /state/rng_state");
      s.rng_state.resize(static_cast<size_t>(n));
      if (n > 0 && H5Dread(d.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, f.independent.get(), s.rng_state.data()) < 0)
        f.h5_fail("cannot read dataset /state/rng_state");
      f.check_bytes("/state/rng_state", s.rng_state.data(), s.rng_state.size() * sizeof(uint64_t));
    }
    s.config_json = f.read_string_dataset("/state/config_json");
    s.metrics_jsonl = f.read_string_dataset("/state/metrics_jsonl");
  } catch (const Error& e) {
    reason = e.what();
  }
  r.agree(reason);

  // Values: every rank reads every tensor and its moment range (collective calls, made even after a failure).
  for (const auto& p : params) {
    const std::string dname = "/params/" + p.name;
    try {
      h5::Id d(H5Dopen2(f.file.get(), dname.c_str(), H5P_DEFAULT), H5Dclose);
      if (!d.ok()) f.h5_fail("cannot open dataset " + dname);
      f.move_tensor(false, d.get(), dname, p.shape, t.params + p.offset, f.collective.get());
    } catch (const Error& e) {
      if (reason.empty()) reason = e.what();
    }
  }
  for (int which = 0; which < 2; ++which) {
    const std::string dname = which == 0 ? "/optimizer/m" : "/optimizer/v";
    h5::Id d(H5Dopen2(f.file.get(), dname.c_str(), H5P_DEFAULT), H5Dclose);
    const std::string moved = f.move_range(false, d.get(), dname, mo.held.begin, mo.held.size(),
                                           mo.held.size() > 0 ? (which == 0 ? t.m : t.v) : nullptr, pieces);
    if (reason.empty()) reason = moved;
  }
  if (!f.file.close() && reason.empty()) reason = path + ": cannot close it: " + h5::reason();
  r.agree(reason);

  // Checksums: each rank its tensors and its own moment range; the moments' parts summed over the ranks.
  std::vector<uint64_t> sums(params.size() + 2, 0);
  for (size_t k = 0; k < params.size(); ++k)
    if (owner(params[k], A, r.size) == r.rank) {
      sums[k] = checksum(t.params + params[k].offset, 0, params[k].size);
      if (sums[k] != stored[k] && reason.empty())
        reason = path + ": /params/" + params[k].name + " does not match its checksum (the file is corrupt)";
    }
  std::vector<uint64_t> moments = {0, 0};
  if (mo.own.size() > 0) {
    moments[0] = checksum(mo.at(t.m, mo.own.begin), mo.own.begin, mo.own.size());
    moments[1] = checksum(mo.at(t.v, mo.own.begin), mo.own.begin, mo.own.size());
  }
  r.sum(moments);
  for (int which = 0; which < 2 && reason.empty(); ++which)
    if (moments[static_cast<size_t>(which)] != stored[params.size() + static_cast<size_t>(which)])
      reason = path + ": /optimizer/" + (which == 0 ? "m" : "v") + " does not match its checksum (the file is corrupt)";
  r.agree(reason);

  // The padding between tensors is not stored: zero it, so every rank's arena is the same bytes.
  std::vector<const NamedTensor*> by_offset;
  for (const auto& p : params) by_offset.push_back(&p);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  int64_t at = 0;
  for (const auto* p : by_offset) {
    if (p->offset > at) std::fill(t.params + at, t.params + p->offset, 0.0f);
    at = std::max(at, p->offset + p->size);
  }
  if (A > at) std::fill(t.params + at, t.params + A, 0.0f);
  return s;
}

}  // namespace bfm::runtime

#endif  // BFM_WITH_HDF5
