// The shard reader through HDF5's C API. Open reads the root attributes and every table once (they are small); the
// row datasets stay open with a chunk cache that holds a few chunks, so windows that share a chunk read it once.
//
// Strings may be fixed-length (what our writer stores) or variable-length (what h5py stores for a Python str), so a
// file made by hand with h5py reads too. float16 time series are read as raw half words and widened here
// (io/half.h); float64 ones are converted by HDF5.
//
// Chunk reads (read_chunk): where a row dataset is laid out as bfm writes it, the open asks HDF5 for every chunk's
// file address and size (H5Dget_chunk_info_by_coord) and read_chunk() reads the chunk's bytes with pread() and checks
// the Fletcher32 checksum HDF5 stored after them, as HDF5's filter does (H5Zfletcher32.c: the sum of the data bytes
// against the stored little-endian word, or its byte-swapped form written by HDF5 before 1.6.3).
#ifdef BFM_WITH_HDF5

#include "io/shard_reader.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/h5_handles.h"
#include "io/half.h"
#include "io/mapped_guard.h"
#include "base/error.h"

namespace bfm::io {

struct ShardReader::File {
  h5::Id file, timeseries, stim, label, stim_index;
  bool half = false;  // timeseries stored as IEEE binary16
  int fd = -1;        // for direct chunk reads (pread): HDF5's own descriptor of the file where it lends it
  bool own_fd = false;
  const unsigned char* map = nullptr;  // the whole file, mapped read-only (mapped_chunk), or null
  size_t map_size = 0;
  struct Chunks {
    std::vector<uint64_t> addr;     // [n_chunks] file offset of each chunk
    std::vector<uint8_t> checksum;  // [n_chunks] 1: Fletcher32 word after its data
    std::unique_ptr<std::atomic<uint8_t>[]> checked;  // [n_chunks] 1: checked in the mapping (mapped_chunk)
  } chunks[3];
  ~File() {
    if (map) ::munmap(const_cast<unsigned char*>(map), map_size);
    if (own_fd && fd >= 0) ::close(fd);
  }
};

namespace {

// Bytes of chunk cache per row dataset: a few 256 x 400 float32 chunks.
constexpr size_t kChunkCacheBytes = 8u << 20;

std::vector<std::string> read_strings_from(hid_t obj, hid_t type, size_t n, bool is_attribute,
                                           const std::string& where) {
  std::vector<std::string> out(n);
  if (n == 0) return out;
  herr_t rc;
  if (H5Tis_variable_str(type) > 0) {
    h5::Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type));
    std::vector<char*> ptrs(n, nullptr);
    rc = is_attribute ? H5Aread(obj, mem.get(), ptrs.data()) : H5Dread(obj, mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data());
    if (rc < 0) fail(where, ": cannot read strings: ", h5::reason());
    for (size_t i = 0; i < n; ++i) out[i] = ptrs[i] ? ptrs[i] : "";
    if (is_attribute) {
      for (char* p : ptrs) H5free_memory(p);
    } else {
      const hsize_t dims[1] = {n};
      h5::Id space(H5Screate_simple(1, dims, nullptr), H5Sclose);
      H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, ptrs.data());
    }
    return out;
  }
  const size_t width = H5Tget_size(type);
  std::vector<char> buf(n * width);
  h5::Id mem(H5Tcopy(type), H5Tclose);
  rc = is_attribute ? H5Aread(obj, mem.get(), buf.data()) : H5Dread(obj, mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
  if (rc < 0) fail(where, ": cannot read strings: ", h5::reason());
  const bool spaces = H5Tget_strpad(type) == H5T_STR_SPACEPAD;
  for (size_t i = 0; i < n; ++i) {
    std::string s(buf.data() + i * width, width);
    s.resize(std::min(s.size(), s.find('\0')));
    if (spaces) s.erase(s.find_last_not_of(' ') + 1);
    out[i] = s;
  }
  return out;
}

class Tables {
 public:
  Tables(hid_t file, const std::string& path) : file_(file), path_(path) {}

  bool has(const char* name) const {
    // Parent groups first: H5Lexists fails on a missing parent.
    std::string prefix;
    const std::string full = name;
    for (size_t at = 1; at <= full.size(); ++at) {
      if (at == full.size() || full[at] == '/') {
        prefix = full.substr(0, at);
        if (H5Lexists(file_, prefix.c_str(), H5P_DEFAULT) <= 0) {
          H5Eclear2(H5E_DEFAULT);
          return false;
        }
      }
    }
    return true;
  }

  h5::Id open(const char* name, hid_t dapl = H5P_DEFAULT) const {
    if (!has(name)) fail(path_, ": not a complete bfm shard: no dataset ", name);
    h5::Id d(H5Dopen2(file_, name, dapl), H5Dclose);
    if (!d.ok()) fail(path_, ": cannot open dataset ", name, ": ", h5::reason());
    return d;
  }

  std::vector<hsize_t> dims(hid_t d, const char* name) const {
    h5::Id space(H5Dget_space(d), H5Sclose);
    const int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 0) fail(path_, ": dataset ", name, ": ", h5::reason());
    std::vector<hsize_t> out(static_cast<size_t>(rank));
    if (rank > 0) H5Sget_simple_extent_dims(space.get(), out.data(), nullptr);
    return out;
  }

  // A 1-D (or [n, k] when k > 0) numeric table read as T, its shape checked.
  template <class T>
  std::vector<T> numbers(const char* name, hid_t memtype, size_t n, size_t k = 0) const {
    h5::Id d = open(name);
    const auto shape = dims(d.get(), name);
    const std::vector<hsize_t> want = k ? std::vector<hsize_t>{n, k} : std::vector<hsize_t>{n};
    if (shape != want) fail(path_, ": dataset ", name, " has shape ", shape_str(shape), ", expected ", shape_str(want));
    h5::Id type(H5Dget_type(d.get()), H5Tclose);
    const H5T_class_t cls = H5Tget_class(type.get());
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) fail(path_, ": dataset ", name, " is not numeric");
    std::vector<T> out(n * std::max<size_t>(k, 1));
    if (!out.empty() && H5Dread(d.get(), memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
      fail(path_, ": cannot read dataset ", name, ": ", h5::reason());
    return out;
  }

  std::vector<std::string> strings(const char* name, size_t n) const {
    h5::Id d = open(name);
    const auto shape = dims(d.get(), name);
    if (shape != std::vector<hsize_t>{n})
      fail(path_, ": dataset ", name, " has shape ", shape_str(shape), ", expected [", n, "]");
    h5::Id type(H5Dget_type(d.get()), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_STRING) fail(path_, ": dataset ", name, " does not hold strings");
    return read_strings_from(d.get(), type.get(), n, false, path_ + ": dataset " + name);
  }

  // Length of a 1-D dataset.
  size_t length(const char* name) const {
    h5::Id d = open(name);
    const auto shape = dims(d.get(), name);
    if (shape.size() != 1) fail(path_, ": dataset ", name, " has shape ", shape_str(shape), ", expected 1-D");
    return shape[0];
  }

  static std::string shape_str(const std::vector<hsize_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  }

 private:
  hid_t file_;
  const std::string& path_;
};

bool has_attribute(hid_t file, const char* name) {
  const htri_t r = H5Aexists(file, name);
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

std::string string_attribute(hid_t file, const char* name, const std::string& path) {
  if (!has_attribute(file, name)) return "";
  h5::Id a(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  h5::Id type(H5Aget_type(a.get()), H5Tclose);
  if (!a.ok() || !type.ok()) fail(path, ": cannot open attribute '", name, "': ", h5::reason());
  if (H5Tget_class(type.get()) != H5T_STRING) fail(path, ": attribute '", name, "' is not a string");
  h5::Id space(H5Aget_space(a.get()), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n != 1) fail(path, ": attribute '", name, "' holds ", n, " values, expected one string");
  return read_strings_from(a.get(), type.get(), 1, true, path + ": attribute '" + name + "'")[0];
}

int64_t integer_attribute(hid_t file, const char* name, const std::string& path) {
  if (!has_attribute(file, name)) fail(path, ": not a complete bfm shard: no root attribute '", name, "'");
  h5::Id a(H5Aopen(file, name, H5P_DEFAULT), H5Aclose);
  h5::Id type(H5Aget_type(a.get()), H5Tclose);
  if (!a.ok() || !type.ok()) fail(path, ": cannot open attribute '", name, "': ", h5::reason());
  if (H5Tget_class(type.get()) != H5T_INTEGER) fail(path, ": attribute '", name, "' is not an integer");
  h5::Id space(H5Aget_space(a.get()), H5Sclose);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) fail(path, ": attribute '", name, "' is not one integer");
  int64_t v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0) fail(path, ": cannot read attribute '", name, "': ", h5::reason());
  return v;
}

}  // namespace

ShardReader::ShardReader(const std::string& path) : path_(path), file_(std::make_unique<File>()) {
  open(H5P_DEFAULT);
}

#ifdef BFM_WITH_MPI
ShardReader::ShardReader(const std::string& path, MPI_Comm comm) : path_(path), file_(std::make_unique<File>()) {
  h5::Quiet quiet;
  h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.ok() || H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL) < 0)
    fail(path, ": cannot set up MPI-IO: ", h5::reason());
  open(fapl.get());
}
#endif

ShardReader::~ShardReader() = default;

void ShardReader::open(int64_t fapl) {
  h5::Quiet quiet;
  std::error_code ec;
  require(std::filesystem::is_regular_file(path_, ec), path_, ": no such shard file");
  file_->file = h5::Id(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose);
  if (!file_->file.ok()) fail(path_, ": not a readable HDF5 file (truncated or damaged?): ", h5::reason());
  const hid_t f = file_->file.get();

  const std::string format = string_attribute(f, "format", path_);
  if (format != kShardFormat)
    fail(path_, ": not a bfm shard (root attribute 'format' is ",
         has_attribute(f, "format") ? "'" + format + "'" : std::string("missing"), ", expected '", kShardFormat, "')");
  const int64_t version = integer_attribute(f, "format_version", path_);
  if (version != kShardFormatVersion)
    fail(path_, ": shard format_version ", version, "; this bfm reads format_version ", kShardFormatVersion);

  header_.n_parcels = integer_attribute(f, "n_parcels", path_);
  require(header_.n_parcels > 0, path_, ": n_parcels is ", header_.n_parcels);
  header_.atlas = string_attribute(f, "atlas", path_);
  header_.converter = string_attribute(f, "converter", path_);
  header_.preprocessing = string_attribute(f, "preprocessing", path_);
  header_.atlas_sha256 = string_attribute(f, "atlas_sha256", path_);  // "" when absent (optional)
  header_.preprocessing_options = string_attribute(f, "preprocessing_options", path_);
  const Tables t(f, path_);
  const auto P = static_cast<size_t>(header_.n_parcels);
  header_.parcel_labels = t.strings("/parcels/labels", P);
  if (t.has("/parcels/coords")) header_.parcel_coords = t.numbers<float>("/parcels/coords", H5T_NATIVE_FLOAT, P, 3);

  // Row datasets.
  h5::Id dapl(H5Pcreate(H5P_DATASET_ACCESS), H5Pclose);
  H5Pset_chunk_cache(dapl.get(), 521, kChunkCacheBytes, 1.0);
  file_->timeseries = t.open("/runs/timeseries", dapl.get());
  const auto ts_shape = t.dims(file_->timeseries.get(), "/runs/timeseries");
  if (ts_shape.size() != 2 || ts_shape[1] != P)
    fail(path_, ": /runs/timeseries has shape ", Tables::shape_str(ts_shape), ", expected [time points, ", P, "]");
  n_timepoints_ = static_cast<int64_t>(ts_shape[0]);
  {
    h5::Id type(H5Dget_type(file_->timeseries.get()), H5Tclose);
    const size_t size = H5Tget_size(type.get());
    if (H5Tget_class(type.get()) != H5T_FLOAT || (size != 2 && size != 4 && size != 8))
      fail(path_, ": /runs/timeseries is not float16, float32 or float64");
    h5::Id half = h5::half_type();
    file_->half = size == 2;
    if (file_->half && H5Tequal(type.get(), half.get()) <= 0)
      fail(path_, ": /runs/timeseries has a 2-byte float type that is not IEEE binary16 little-endian");
    header_.storage = file_->half ? Storage::float16 : Storage::float32;
  }
  if (t.has("/runs/stim_embedding")) {
    file_->stim = t.open("/runs/stim_embedding", dapl.get());
    const auto s = t.dims(file_->stim.get(), "/runs/stim_embedding");
    if (s.size() != 2 || s[0] != ts_shape[0])
      fail(path_, ": /runs/stim_embedding has shape ", Tables::shape_str(s), ", expected [", ts_shape[0], ", S]");
    header_.stimulus_dim = static_cast<int64_t>(s[1]);
  }
  if (t.has("/runs/label")) {
    file_->label = t.open("/runs/label", dapl.get());
    const auto s = t.dims(file_->label.get(), "/runs/label");
    if (s != std::vector<hsize_t>{ts_shape[0]})
      fail(path_, ": /runs/label has shape ", Tables::shape_str(s), ", expected [", ts_shape[0], "]");
    header_.labels = true;
  }
  if (t.has("/runs/label_names")) header_.label_names = t.strings("/runs/label_names", t.length("/runs/label_names"));
  if (t.has("/stimuli/id")) {
    header_.stimulus_ids = t.strings("/stimuli/id", t.length("/stimuli/id"));
    if (t.has("/runs/stimulus")) {
      file_->stim_index = t.open("/runs/stimulus", dapl.get());
      const auto s = t.dims(file_->stim_index.get(), "/runs/stimulus");
      if (s != std::vector<hsize_t>{ts_shape[0]})
        fail(path_, ": /runs/stimulus has shape ", Tables::shape_str(s), ", expected [", ts_shape[0], "]");
    }
  }

  // Subjects.
  const size_t n_subjects = t.length("/subjects/id");
  const auto ids = t.strings("/subjects/id", n_subjects);
  const auto age = t.numbers<float>("/subjects/age", H5T_NATIVE_FLOAT, n_subjects);
  const auto sex = t.strings("/subjects/sex", n_subjects);
  const auto diagnosis = t.strings("/subjects/diagnosis", n_subjects);
  std::vector<float> scores;
  if (t.has("/subjects/scores")) {
    const size_t k = t.length("/subjects/score_names");
    header_.score_names = t.strings("/subjects/score_names", k);
    scores = t.numbers<float>("/subjects/scores", H5T_NATIVE_FLOAT, n_subjects, k);
  }
  const size_t k = header_.score_names.size();
  for (size_t i = 0; i < n_subjects; ++i) {
    Subject s{ids[i], age[i], sex[i], diagnosis[i], {}};
    if (k) s.scores.assign(scores.begin() + static_cast<std::ptrdiff_t>(i * k),
                           scores.begin() + static_cast<std::ptrdiff_t>((i + 1) * k));
    subjects_.push_back(std::move(s));
  }

  // Runs.
  const size_t R = t.length("/runs/offset");
  const auto offset = t.numbers<int64_t>("/runs/offset", H5T_NATIVE_INT64, R);
  const auto length = t.numbers<int64_t>("/runs/length", H5T_NATIVE_INT64, R);
  run_subject_ = t.numbers<int32_t>("/runs/subject", H5T_NATIVE_INT32, R);
  const auto tr = t.numbers<double>("/runs/tr", H5T_NATIVE_DOUBLE, R);
  const auto session = t.strings("/runs/session", R), study = t.strings("/runs/study", R),
             task = t.strings("/runs/task", R), site = t.strings("/runs/site", R);
  const auto source = t.has("/runs/source") ? t.strings("/runs/source", R) : std::vector<std::string>(R);
  for (size_t r = 0; r < R; ++r) {
    if (run_subject_[r] < 0 || static_cast<size_t>(run_subject_[r]) >= n_subjects)
      fail(path_, ": run ", r, ": /runs/subject is ", run_subject_[r], ", outside the ", n_subjects, " subjects");
    if (offset[r] < 0 || length[r] <= 0 || offset[r] + length[r] > n_timepoints_)
      fail(path_, ": run ", r, ": rows [", offset[r], ", ", offset[r] + length[r], ") are outside /runs/timeseries (",
           n_timepoints_, " rows)");
    runs_.push_back(Run{ids[static_cast<size_t>(run_subject_[r])], session[r], study[r], task[r], site[r], source[r],
                        tr[r], length[r], offset[r]});
  }
  find_chunks();
}

void ShardReader::find_chunks() {
  const hid_t f = file_->file.get();
  bool file_direct = std::endian::native == std::endian::little;
  {
    h5::Id fapl(H5Fget_access_plist(f), H5Pclose);
    file_direct = file_direct && fapl.ok() && H5Pget_driver(fapl.get()) == H5FD_SEC2;
    h5::Id fcpl(H5Fget_create_plist(f), H5Pclose);
    hsize_t userblock = 1;
    file_direct = file_direct && fcpl.ok() && H5Pget_userblock(fcpl.get(), &userblock) >= 0 && userblock == 0;
  }
  const hid_t sets[3] = {file_->timeseries.get(), file_->stim.ok() ? file_->stim.get() : -1,
                         file_->label.ok() ? file_->label.get() : -1};
  bool any_direct = false;
  for (int w = 0; w < 3; ++w) {
    if (sets[w] < 0) continue;
    const hid_t d = sets[w];
    ChunkLayout& L = layout_[w];
    const bool label = w == static_cast<int>(Rows::label);
    L.cols = label ? 1 : w == 0 ? header_.n_parcels : header_.stimulus_dim;
    L.element_bytes = w == 0 && file_->half ? 2 : 4;
    h5::Id dcpl(H5Dget_create_plist(d), H5Pclose);
    hsize_t dims[2] = {0, 0};
    const bool chunked = dcpl.ok() && H5Pget_layout(dcpl.get()) == H5D_CHUNKED &&
                         H5Pget_chunk(dcpl.get(), 2, dims) == (label ? 1 : 2) && dims[0] > 0;
    L.rows = chunked ? static_cast<int64_t>(dims[0]) : kShardChunkRows;
    L.n_chunks = (n_timepoints_ + L.rows - 1) / L.rows;
    if (w == 0) header_.chunk_rows = L.rows;
    bool direct = file_direct && chunked && (label || static_cast<int64_t>(dims[1]) == L.cols);
    const int filters = direct ? H5Pget_nfilters(dcpl.get()) : -1;
    direct = direct && (filters == 0 || filters == 1);
    if (direct && filters == 1) {
      unsigned flags = 0, info = 0;
      size_t n_values = 0;
      direct = H5Pget_filter2(dcpl.get(), 0, &flags, &n_values, nullptr, 0, nullptr, &info) == H5Z_FILTER_FLETCHER32;
    }
    if (direct) {
      h5::Id type(H5Dget_type(d), H5Tclose);
      h5::Id half = h5::half_type();
      const hid_t want = w == 0 ? (file_->half ? half.get() : H5T_IEEE_F32LE) : label ? H5T_STD_I32LE : H5T_IEEE_F32LE;
      direct = type.ok() && H5Tequal(type.get(), want) > 0;
    }
    File::Chunks& c = file_->chunks[w];
    const auto raw = static_cast<hsize_t>(L.rows * L.cols * L.element_bytes);
    for (int64_t k = 0; direct && k < L.n_chunks; ++k) {
      const hsize_t offset[2] = {static_cast<hsize_t>(k * L.rows), 0};
      unsigned mask = 0;
      haddr_t addr = HADDR_UNDEF;
      hsize_t size = 0;
      direct = H5Dget_chunk_info_by_coord(d, offset, &mask, &addr, &size) >= 0 && addr != HADDR_UNDEF;
      const bool summed = filters == 1 && (mask & 1u) == 0;  // bit 0: the pipeline's first filter was skipped
      direct = direct && size == raw + (summed ? 4 : 0);
      c.addr.push_back(addr);
      c.checksum.push_back(summed ? 1 : 0);
    }
    if (!direct) c = File::Chunks{};
    H5Eclear2(H5E_DEFAULT);
    L.direct = direct;
    any_direct = any_direct || direct;
  }
  if (any_direct) {  // the default (sec2) driver's descriptor: pread leaves its offset alone; else one of ours
    void* handle = nullptr;
    if (H5Fget_vfd_handle(f, H5P_DEFAULT, &handle) >= 0 && handle != nullptr) {
      file_->fd = *static_cast<int*>(handle);
    } else {
      H5Eclear2(H5E_DEFAULT);
      file_->fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
      file_->own_fd = true;
    }
    if (file_->fd < 0)
      for (auto& L : layout_) L.direct = false;
    // The mapping (BFM_NO_MMAP=1: pread only). It holds no descriptor: the file may be closed or renamed over.
    struct stat st {};
    const char* no_mmap = std::getenv("BFM_NO_MMAP");
    if (file_->fd >= 0 && !(no_mmap && *no_mmap && std::string(no_mmap) != "0") && ::fstat(file_->fd, &st) == 0 &&
        st.st_size > 0) {
      void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, file_->fd, 0);
      if (p != MAP_FAILED) {
        // No read-around on faults (the device's read-ahead, 8 MB here, per 4 KB touched: a corpus larger than
        // memory thrashes); mapped_chunk asks for each chunk's own pages instead.
        ::madvise(p, static_cast<size_t>(st.st_size), MADV_RANDOM);
        file_->map = static_cast<const unsigned char*>(p);
        file_->map_size = static_cast<size_t>(st.st_size);
        for (int w = 0; w < 3; ++w) {
          const size_t n = file_->chunks[w].addr.size();
          file_->chunks[w].checked.reset(new std::atomic<uint8_t>[n]);
          for (size_t k = 0; k < n; ++k) file_->chunks[w].checked[k].store(0, std::memory_order_relaxed);
        }
      }
    }
  }
}

bool ShardReader::mapped() const { return file_->map != nullptr; }

namespace {
struct ChecksumJob {  // run_guarded's context: plain data only
  const unsigned char* bytes;
  size_t raw;
  uint32_t sum, stored;
};
void checksum_job(void* c) {
  auto& j = *static_cast<ChecksumJob*>(c);
  const unsigned char* s = j.bytes + j.raw;
  j.stored = static_cast<uint32_t>(s[0]) | static_cast<uint32_t>(s[1]) << 8 | static_cast<uint32_t>(s[2]) << 16 |
             static_cast<uint32_t>(s[3]) << 24;
  j.sum = fletcher32(j.bytes, j.raw);
}
}  // namespace

const unsigned char* ShardReader::mapped_chunk(Rows which, int64_t chunk, int64_t run) const {
  const ChunkLayout& L = chunk_layout(which);
  const int w = static_cast<int>(which);
  if (!file_->map || !L.direct || chunk < 0 || chunk >= L.n_chunks) return nullptr;
  const File::Chunks& c = file_->chunks[w];
  const auto raw = static_cast<size_t>(L.rows * L.cols * L.element_bytes);
  const bool summed = c.checksum[static_cast<size_t>(chunk)] != 0;
  const uint64_t addr = c.addr[static_cast<size_t>(chunk)];
  if (addr + raw + (summed ? 4 : 0) > file_->map_size) return nullptr;  // past the end: read_chunk names it
  const unsigned char* bytes = file_->map + addr;
  {  // the chunk's pages, read ahead in one request where the page cache lacks the first or the last page wholly
     // inside the chunk (its end pages may be a neighbour's, read with it). Checking every page (mincore of the whole
     // chunk), or asking for read-ahead every time, costs 15 % of a warm read; these two miss only chunks evicted
     // in the middle, which then fault page by page (bench/RESULTS.md).
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t begin = reinterpret_cast<uintptr_t>(bytes), end = begin + raw + (summed ? 4 : 0);
    const uintptr_t from = begin & ~(page - 1);
    const uintptr_t inner_first = (begin + page - 1) & ~(page - 1), inner_last = (end & ~(page - 1)) - page;
    unsigned char first_in = 0, last_in = 0;
    if (inner_first > inner_last || ::mincore(reinterpret_cast<void*>(inner_first), 1, &first_in) != 0 ||
        ::mincore(reinterpret_cast<void*>(inner_last), 1, &last_in) != 0 || !(first_in & 1) || !(last_in & 1))
      ::madvise(reinterpret_cast<void*>(from), end - from, MADV_WILLNEED);
  }
  if (!summed || c.checked[static_cast<size_t>(chunk)].load(std::memory_order_acquire)) return bytes;
  ChecksumJob job{bytes, raw, 0, 0};
  const char* name = w == 0 ? "/runs/timeseries" : w == 1 ? "/runs/stim_embedding" : "/runs/label";
  static const Run unknown{};
  const Run& r = run >= 0 && run < static_cast<int64_t>(runs_.size()) ? runs_[static_cast<size_t>(run)] : unknown;
  const int64_t row0 = chunk * L.rows, rows = std::min(L.rows, n_timepoints_ - row0);
  if (!run_guarded(checksum_job, &job))
    fail(path_, ": run ", run, " (subject '", r.subject, "'): chunk ", chunk, " of ", name, " (rows ", row0, "..",
         row0 + rows, "): cannot be read through its mapping (the file was truncated or overwritten while open, or an "
         "I/O error)");
  const uint32_t swapped = (job.sum & 0xff00ff00u) >> 8 | (job.sum & 0x00ff00ffu) << 8;
  if (job.stored != job.sum && job.stored != swapped)
    fail(path_, ": run ", run, " (subject '", r.subject, "'): chunk ", chunk, " of ", name, " (rows ", row0, "..",
         row0 + rows, "): the file is corrupt (Fletcher32 checksum mismatch)");
  c.checked[static_cast<size_t>(chunk)].store(1, std::memory_order_release);
  return bytes;
}

void ShardReader::check_window(int64_t run, int64_t start, int64_t T) const {
  require(run >= 0 && run < static_cast<int64_t>(runs_.size()), path_, ": run ", run, " does not exist (",
          runs_.size(), " runs)");
  const Run& r = runs_[static_cast<size_t>(run)];
  require(start >= 0 && T > 0 && start + T <= r.length, path_, ": run ", run, " (subject '", r.subject,
          "'): window [", start, ", ", start + T, ") is outside its ", r.length, " time points");
}

namespace {

// Rows [row0, row0 + T) of a row dataset (cols 0 = 1-D) into `out`.
void read_rows(hid_t d, hid_t memtype, int64_t row0, int64_t T, int64_t cols, void* out, const std::string& path,
               const char* name, int64_t run, const Run& r) {
  const int rank = cols > 0 ? 2 : 1;
  h5::Id fspace(H5Dget_space(d), H5Sclose);
  const hsize_t start[2] = {static_cast<hsize_t>(row0), 0};
  const hsize_t count[2] = {static_cast<hsize_t>(T), static_cast<hsize_t>(cols)};
  h5::Id mspace(H5Screate_simple(rank, count, nullptr), H5Sclose);
  if (H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr) < 0 ||
      H5Dread(d, memtype, mspace.get(), fspace.get(), H5P_DEFAULT, out) < 0) {
    const std::string why = h5::reason();
    fail(path, ": run ", run, " (subject '", r.subject, "', rows ", row0, "..", row0 + T, " of ", name,
         "): read failed, the file is corrupt (checksum or decoding error): ", why);
  }
}

}  // namespace

void ShardReader::read_window(int64_t run, int64_t start, int64_t T, float* out) const {
  check_window(run, start, T);
  h5::Quiet quiet;
  const Run& r = runs_[static_cast<size_t>(run)];
  if (file_->half) {
    std::vector<uint16_t> halves(static_cast<size_t>(T * header_.n_parcels));
    h5::Id half = h5::half_type();
    read_rows(file_->timeseries.get(), half.get(), r.offset + start, T, header_.n_parcels, halves.data(), path_,
              "/runs/timeseries", run, r);
    for (size_t i = 0; i < halves.size(); ++i) out[i] = half_to_float(halves[i]);
  } else {
    read_rows(file_->timeseries.get(), H5T_NATIVE_FLOAT, r.offset + start, T, header_.n_parcels, out, path_,
              "/runs/timeseries", run, r);
  }
}

std::vector<float> ShardReader::read_window(int64_t run, int64_t start, int64_t T) const {
  check_window(run, start, T);
  std::vector<float> out(static_cast<size_t>(T * header_.n_parcels));
  read_window(run, start, T, out.data());
  return out;
}

void ShardReader::read_stimulus(int64_t run, int64_t start, int64_t T, float* out) const {
  check_window(run, start, T);
  require(file_->stim.ok(), path_, ": no /runs/stim_embedding in this shard");
  h5::Quiet quiet;
  const Run& r = runs_[static_cast<size_t>(run)];
  read_rows(file_->stim.get(), H5T_NATIVE_FLOAT, r.offset + start, T, header_.stimulus_dim, out, path_,
            "/runs/stim_embedding", run, r);
}

bool ShardReader::has_rows(Rows which) const {
  return which == Rows::timeseries || (which == Rows::stimulus && file_->stim.ok()) ||
         (which == Rows::label && file_->label.ok());
}

const ShardReader::ChunkLayout& ShardReader::chunk_layout(Rows which) const {
  require(has_rows(which), path_, ": no ", which == Rows::stimulus ? "/runs/stim_embedding" : "/runs/label",
          " in this shard");
  return layout_[static_cast<int>(which)];
}

void ShardReader::read_chunk(Rows which, int64_t chunk, void* out, int64_t run) const {
  const ChunkLayout& L = chunk_layout(which);
  const int w = static_cast<int>(which);
  const char* name = w == 0 ? "/runs/timeseries" : w == 1 ? "/runs/stim_embedding" : "/runs/label";
  require(chunk >= 0 && chunk < L.n_chunks, path_, ": chunk ", chunk, " of ", name, " does not exist (", L.n_chunks,
          " chunks)");
  const int64_t row0 = chunk * L.rows, rows = std::min(L.rows, n_timepoints_ - row0);
  static const Run unknown{};
  const Run& r = run >= 0 && run < static_cast<int64_t>(runs_.size()) ? runs_[static_cast<size_t>(run)] : unknown;
  if (!L.direct) {
    h5::Quiet quiet;
    const hid_t d = w == 0 ? file_->timeseries.get() : w == 1 ? file_->stim.get() : file_->label.get();
    h5::Id half = h5::half_type();
    const hid_t memtype = w == 2 ? H5T_NATIVE_INT32 : w == 0 && file_->half ? half.get() : H5T_NATIVE_FLOAT;
    read_rows(d, memtype, row0, rows, w == 2 ? 0 : L.cols, out, path_, name, run, r);
    return;
  }
  const File::Chunks& c = file_->chunks[w];
  const auto raw = static_cast<size_t>(L.rows * L.cols * L.element_bytes);
  const bool summed = c.checksum[static_cast<size_t>(chunk)] != 0;
  const size_t size = raw + (summed ? 4 : 0);
  auto* bytes = static_cast<unsigned char*>(out);
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::pread(file_->fd, bytes + done, size - done,
                              static_cast<off_t>(c.addr[static_cast<size_t>(chunk)] + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      fail(path_, ": run ", run, " (subject '", r.subject, "'): chunk ", chunk, " of ", name, " (rows ", row0, "..",
           row0 + rows, "): read failed, the file is corrupt or truncated: ",
           n < 0 ? std::strerror(errno) : "end of file");
    done += static_cast<size_t>(n);
  }
  if (!summed) return;
  const uint32_t stored = static_cast<uint32_t>(bytes[raw]) | static_cast<uint32_t>(bytes[raw + 1]) << 8 |
                          static_cast<uint32_t>(bytes[raw + 2]) << 16 | static_cast<uint32_t>(bytes[raw + 3]) << 24;
  const uint32_t sum = fletcher32(bytes, raw);
  const uint32_t swapped = (sum & 0xff00ff00u) >> 8 | (sum & 0x00ff00ffu) << 8;  // HDF5 < 1.6.3's byte order
  if (stored != sum && stored != swapped)
    fail(path_, ": run ", run, " (subject '", r.subject, "'): chunk ", chunk, " of ", name, " (rows ", row0, "..",
         row0 + rows, "): the file is corrupt (Fletcher32 checksum mismatch)");
}

uint32_t fletcher32(const void* data, size_t bytes) {
  // HDF5's loop adds word after word (sum1 += w; sum2 += sum1) and folds both sums to 16 bits (plus a carry) every
  // 360 words. Over one block of n words that is sum2 += n * sum1 + sum_i (n - i) w_i and sum1 += sum_i w_i, the
  // same 32-bit arithmetic (wrapping alike), with no dependency from word to word.
  const auto* p = static_cast<const unsigned char*>(data);
  size_t words = bytes / 2;
  uint32_t sum1 = 0, sum2 = 0;
  while (words > 0) {
    const auto n = static_cast<uint32_t>(std::min<size_t>(words, 360));
    words -= n;
    uint32_t a = 0, b = 0;
    for (uint32_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      const uint32_t word = std::endian::native == std::endian::little ? __builtin_bswap16(v) : v;
      a += word;
      b += (n - i) * word;
    }
    p += 2 * static_cast<size_t>(n);
    sum2 += n * sum1 + b;
    sum1 += a;
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  if (bytes % 2) {
    sum1 += static_cast<uint32_t>(*p) << 8;
    sum2 += sum1;
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  sum1 = (sum1 & 0xffff) + (sum1 >> 16);
  sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  return (sum2 << 16) | sum1;
}

void ShardReader::read_stimulus_index(int64_t run, int64_t start, int64_t T, int32_t* out) const {
  check_window(run, start, T);
  require(file_->stim_index.ok(), path_, ": no /runs/stimulus in this shard");
  h5::Quiet quiet;
  const Run& r = runs_[static_cast<size_t>(run)];
  read_rows(file_->stim_index.get(), H5T_NATIVE_INT32, r.offset + start, T, 0, out, path_, "/runs/stimulus", run, r);
}

std::vector<float> ShardReader::read_stimulus_table() const {
  h5::Quiet quiet;
  const Tables t(file_->file.get(), path_);
  if (!t.has("/stimuli/features")) return {};
  return t.numbers<float>("/stimuli/features", H5T_NATIVE_FLOAT, header_.stimulus_ids.size(),
                          static_cast<size_t>(header_.stimulus_dim));
}

void ShardReader::read_labels(int64_t run, int64_t start, int64_t T, int32_t* out) const {
  check_window(run, start, T);
  require(file_->label.ok(), path_, ": no /runs/label in this shard");
  h5::Quiet quiet;
  const Run& r = runs_[static_cast<size_t>(run)];
  read_rows(file_->label.get(), H5T_NATIVE_INT32, r.offset + start, T, 0, out, path_, "/runs/label", run, r);
}

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
