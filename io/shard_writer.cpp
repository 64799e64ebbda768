// The shard writer: builds the datasets of docs/FORMAT.md through HDF5's C API.
//
// Row datasets (/runs/timeseries, /runs/stim_embedding, /runs/label, /runs/stimulus) are chunked ShardHeader::chunk_rows rows by all columns,
// extendible along time, and carry the Fletcher32 checksum filter. The serial writer extends them run by run; the
// collective writer creates them at their final size. Every write goes through write_rows(), which every rank calls
// the same number of times (a rank with nothing to write selects nothing), so the same code serves the sec2 driver
// and collective MPI-IO. Strings are fixed-length, null-padded UTF-8: parallel HDF5 cannot write variable-length data,
// and h5py reads either kind.
#ifdef BFM_WITH_HDF5

#include "io/shard_writer.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <type_traits>

#include "io/h5_handles.h"
#include "io/half.h"
#include "base/error.h"

namespace bfm::io {

namespace {

// A run's problems against the header, or "" when it is fine.
std::string check_run(const RunView& run) {
  const Run& m = run.meta;
  std::string what = "run of subject '" + m.subject + "' (task '" + m.task + "', session '" + m.session + "'): ";
  if (m.subject.empty()) return what + "empty subject id";
  if (m.length <= 0) return what + "length " + std::to_string(m.length) + " (must be > 0)";
  if (!(m.tr > 0.0)) return what + "TR " + std::to_string(m.tr) + " s (must be > 0)";
  if (!run.timeseries) return what + "no time series";
  return "";
}

std::string check_header(const ShardHeader& h) {
  if (h.n_parcels <= 0) return "n_parcels " + std::to_string(h.n_parcels) + " (must be > 0)";
  if (!h.parcel_labels.empty() && static_cast<int64_t>(h.parcel_labels.size()) != h.n_parcels)
    return std::to_string(h.parcel_labels.size()) + " parcel labels for " + std::to_string(h.n_parcels) + " parcels";
  if (!h.parcel_coords.empty() && static_cast<int64_t>(h.parcel_coords.size()) != 3 * h.n_parcels)
    return std::to_string(h.parcel_coords.size()) + " parcel coordinates for " + std::to_string(h.n_parcels) +
           " parcels (need 3 each)";
  if (h.stimulus_dim < 0) return "stimulus_dim " + std::to_string(h.stimulus_dim);
  if (!h.label_names.empty() && !h.labels) return "label names given for a shard without /runs/label";
  if (!h.stimulus_features.empty() &&
      h.stimulus_features.size() != h.stimulus_ids.size() * static_cast<size_t>(h.stimulus_dim))
    return std::to_string(h.stimulus_features.size()) + " stimulus feature values for " +
           std::to_string(h.stimulus_ids.size()) + " stimuli of dimension " + std::to_string(h.stimulus_dim);
  if (h.chunk_rows < 1 || h.chunk_rows > (int64_t(1) << 20))
    return "chunk_rows " + std::to_string(h.chunk_rows) + " (must be 1 to 1048576)";
  // HDF5 chunks must stay under 4 GB.
  if (h.chunk_rows * std::max<int64_t>({h.n_parcels, h.stimulus_dim, 1}) * 4 >= (int64_t(1) << 32))
    return "chunks of " + std::to_string(h.chunk_rows) + " rows x " + std::to_string(h.n_parcels) +
           " parcels are over HDF5's 4 GB chunk limit";
  return "";
}

std::string check_subject(const ShardHeader& h, const Subject& s) {
  if (s.id.empty()) return "a subject with an empty id";
  if (!s.scores.empty() && s.scores.size() != h.score_names.size())
    return "subject '" + s.id + "' has " + std::to_string(s.scores.size()) + " scores, the header names " +
           std::to_string(h.score_names.size());
  return "";
}

h5::Id string_type(size_t size) {
  h5::Id t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), std::max<size_t>(size, 1));
  H5Tset_strpad(t.get(), H5T_STR_NULLPAD);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  return t;
}

}  // namespace

// The open file, its row datasets and how to write (driver-independent).
struct ShardWriter::File {
  std::string path, tmp;
  ShardHeader header;
  h5::Id file, timeseries, stim, label, stim_index, dxpl;
  bool writes_tables = true;  // serial: yes; collective: rank 0 only

  [[noreturn]] void h5_fail(const std::string& what) const { fail(path, ": ", what, ": ", h5::reason()); }

  // Creates the file with the given access properties (sec2 or mpio) and the row datasets with `rows` rows.
  void create(hid_t fapl, int64_t rows) {
    // No object timestamps (HDF5 records creation and modification times by default): the same corpus is then the
    // same bytes, whenever and by however many ranks it is written.
    h5::Id fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    h5::Id gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    if (!fcpl.ok() || !gcpl.ok() || H5Pset_obj_track_times(fcpl.get(), 0) < 0 || H5Pset_obj_track_times(gcpl.get(), 0) < 0)
      h5_fail("cannot set up the file's properties");
    file = h5::Id(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl), H5Fclose);
    if (!file.ok()) h5_fail("cannot create " + tmp);
    for (const char* group : {"/parcels", "/runs", "/subjects", "/stimuli"}) {
      if (group == std::string("/stimuli") && header.stimulus_ids.empty()) continue;
      h5::Id g(H5Gcreate2(file.get(), group, H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
      if (!g.ok()) h5_fail(std::string("cannot create group ") + group);
    }
    h5::Id half = h5::half_type();
    const hid_t ts_type = header.storage == Storage::float16 ? half.get() : H5T_IEEE_F32LE;
    timeseries = row_dataset("/runs/timeseries", ts_type, rows, header.n_parcels);
    if (header.stimulus_dim > 0) stim = row_dataset("/runs/stim_embedding", H5T_IEEE_F32LE, rows, header.stimulus_dim);
    if (header.labels) label = row_dataset("/runs/label", H5T_STD_I32LE, rows, 0);
    if (!header.stimulus_ids.empty()) stim_index = row_dataset("/runs/stimulus", H5T_STD_I32LE, rows, 0);
  }

  // A chunked, checksummed dataset [rows, cols] (or [rows] when cols is 0), extendible along rows.
  h5::Id row_dataset(const char* name, hid_t type, int64_t rows, int64_t cols) {
    const int rank = cols > 0 ? 2 : 1;
    const hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(cols)};
    const hsize_t maxdims[2] = {H5S_UNLIMITED, static_cast<hsize_t>(cols)};
    const hsize_t chunk[2] = {static_cast<hsize_t>(header.chunk_rows), static_cast<hsize_t>(cols)};
    h5::Id space(H5Screate_simple(rank, dims, maxdims), H5Sclose);
    h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    if (!space.ok() || !dcpl.ok() || H5Pset_chunk(dcpl.get(), rank, chunk) < 0 || H5Pset_fletcher32(dcpl.get()) < 0 ||
        H5Pset_obj_track_times(dcpl.get(), 0) < 0)
      h5_fail(std::string("cannot set up dataset ") + name);
    h5::Id d(H5Dcreate2(file.get(), name, type, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) h5_fail(std::string("cannot create dataset ") + name);
    return d;
  }

  void extend(int64_t rows) {
    for (const h5::Id* d : {&timeseries, &stim, &label, &stim_index}) {
      if (!d->ok()) continue;
      const hsize_t dims[2] = {static_cast<hsize_t>(rows), 0};
      h5::Id space(H5Dget_space(d->get()), H5Sclose);
      hsize_t cur[2] = {0, 0};
      H5Sget_simple_extent_dims(space.get(), cur, nullptr);
      const hsize_t want[2] = {dims[0], cur[1]};
      if (H5Dset_extent(d->get(), want) < 0) h5_fail("cannot extend the row datasets to " + std::to_string(rows));
    }
  }

  // Writes rows [row0, row0 + nrows) of a row dataset from `data` (memtype, row-major, `cols` per row; cols 0 =
  // 1-D). Called by every rank in collective mode; nrows may be 0.
  void write_rows(hid_t dset, const char* name, hid_t memtype, int64_t row0, int64_t nrows, int64_t cols,
                  const void* data) {
    const int rank = cols > 0 ? 2 : 1;
    h5::Id fspace(H5Dget_space(dset), H5Sclose);
    const hsize_t start[2] = {static_cast<hsize_t>(row0), 0};
    const hsize_t count[2] = {static_cast<hsize_t>(nrows), static_cast<hsize_t>(cols)};
    const hsize_t mdims[2] = {static_cast<hsize_t>(std::max<int64_t>(nrows, 1)), static_cast<hsize_t>(cols)};
    h5::Id mspace(H5Screate_simple(rank, mdims, nullptr), H5Sclose);
    herr_t rc;
    if (nrows > 0) {
      rc = H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
    } else {
      rc = std::min(H5Sselect_none(fspace.get()), H5Sselect_none(mspace.get()));
    }
    static const float nothing[1] = {0};
    if (rc < 0 || H5Dwrite(dset, memtype, mspace.get(), fspace.get(), dxpl.get(), data ? data : nothing) < 0)
      h5_fail(std::string("cannot write rows ") + std::to_string(row0) + ".." + std::to_string(row0 + nrows) +
              " of " + name);
  }

  // Writes `n` rows at `row0` of every row dataset: one run (serial) or one rank's runs (collective). Null stim or
  // label (or stimulus index) rows are stored as the documented defaults (0 and -1).
  void write_block(int64_t row0, int64_t n, const float* ts, const float* stim_rows, const int32_t* label_rows,
                   const int32_t* stimulus_rows = nullptr) {
    const auto P = static_cast<size_t>(header.n_parcels);
    if (header.storage == Storage::float16) {
      std::vector<uint16_t> halves(static_cast<size_t>(n) * P);
      for (size_t i = 0; i < halves.size(); ++i) halves[i] = float_to_half(ts[i]);
      h5::Id half = h5::half_type();
      write_rows(timeseries.get(), "/runs/timeseries", half.get(), row0, n, header.n_parcels, halves.data());
    } else {
      write_rows(timeseries.get(), "/runs/timeseries", H5T_NATIVE_FLOAT, row0, n, header.n_parcels, ts);
    }
    if (stim.ok()) {
      std::vector<float> zeros;
      if (!stim_rows && n > 0) {
        zeros.assign(static_cast<size_t>(n * header.stimulus_dim), 0.0f);
        stim_rows = zeros.data();
      }
      write_rows(stim.get(), "/runs/stim_embedding", H5T_NATIVE_FLOAT, row0, n, header.stimulus_dim, stim_rows);
    }
    if (label.ok()) {
      std::vector<int32_t> none;
      if (!label_rows && n > 0) {
        none.assign(static_cast<size_t>(n), -1);
        label_rows = none.data();
      }
      write_rows(label.get(), "/runs/label", H5T_NATIVE_INT32, row0, n, 0, label_rows);
    }
    if (stim_index.ok()) {
      std::vector<int32_t> none;
      if (!stimulus_rows && n > 0) {
        none.assign(static_cast<size_t>(n), -1);
        stimulus_rows = none.data();
      }
      write_rows(stim_index.get(), "/runs/stimulus", H5T_NATIVE_INT32, row0, n, 0, stimulus_rows);
    }
  }

  // A whole small dataset, written by the table writer only (others take part with an empty selection).
  void table(const char* name, hid_t filetype, hid_t memtype, const std::vector<hsize_t>& dims, const void* data) {
    h5::Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
    h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    if (!dcpl.ok() || H5Pset_obj_track_times(dcpl.get(), 0) < 0) h5_fail(std::string("cannot set up dataset ") + name);
    h5::Id d(H5Dcreate2(file.get(), name, filetype, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
    if (!d.ok()) h5_fail(std::string("cannot create dataset ") + name);
    bool empty = !writes_tables;
    for (hsize_t n : dims) empty = empty || n == 0;
    if (empty) {
      H5Sselect_none(space.get());
    }
    static const char nothing[8] = {};
    if (H5Dwrite(d.get(), memtype, space.get(), space.get(), dxpl.get(), data && !empty ? data : nothing) < 0)
      h5_fail(std::string("cannot write dataset ") + name);
  }

  template <class T>
  void numbers(const char* name, hid_t filetype, const std::vector<T>& v, std::vector<hsize_t> dims = {}) {
    if (dims.empty()) dims = {v.size()};
    hid_t mem;
    if constexpr (std::is_same_v<T, float>) mem = H5T_NATIVE_FLOAT;
    else if constexpr (std::is_same_v<T, double>) mem = H5T_NATIVE_DOUBLE;
    else if constexpr (std::is_same_v<T, int32_t>) mem = H5T_NATIVE_INT32;
    else mem = H5T_NATIVE_INT64;
    table(name, filetype, mem, dims, v.data());
  }

  void strings(const char* name, const std::vector<std::string>& v) {
    size_t width = 1;
    for (const auto& s : v) width = std::max(width, s.size());
    std::vector<char> buf(v.size() * width, '\0');
    for (size_t i = 0; i < v.size(); ++i) std::memcpy(buf.data() + i * width, v[i].data(), v[i].size());
    h5::Id t = string_type(width);
    table(name, t.get(), t.get(), {v.size()}, buf.data());
  }

  void attribute(const char* name, hid_t filetype, hid_t memtype, const void* value) {
    h5::Id space(H5Screate(H5S_SCALAR), H5Sclose);
    h5::Id a(H5Acreate2(file.get(), name, filetype, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!a.ok() || H5Awrite(a.get(), memtype, value) < 0) h5_fail(std::string("cannot write attribute ") + name);
  }
  void attribute(const char* name, const std::string& value) {
    h5::Id t = string_type(value.size());
    std::string padded = value.empty() ? std::string(1, '\0') : value;
    attribute(name, t.get(), t.get(), padded.data());
  }

  // Root attributes and every table, from the complete (all ranks') metadata. Run offsets must be set.
  void write_tables(const std::vector<Run>& runs, const std::vector<Subject>& given_subjects) {
    // Subject table: given subjects first (first occurrence of an id wins), then any run's subject not given.
    std::vector<Subject> subjects;
    std::map<std::string, int32_t> index;
    auto add = [&](const Subject& s) {
      if (index.emplace(s.id, static_cast<int32_t>(subjects.size())).second) subjects.push_back(s);
    };
    for (const auto& s : given_subjects) add(s);
    for (const auto& r : runs) add(Subject{r.subject, NAN, "", "", {}});

    int64_t rows = 0;
    for (const auto& r : runs) rows += r.length;
    const int32_t version = kShardFormatVersion;
    const int64_t n_runs = static_cast<int64_t>(runs.size()), n_subjects = static_cast<int64_t>(subjects.size());
    attribute("format", kShardFormat);
    attribute("format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &version);
    attribute("n_parcels", H5T_STD_I64LE, H5T_NATIVE_INT64, &header.n_parcels);
    attribute("n_runs", H5T_STD_I64LE, H5T_NATIVE_INT64, &n_runs);
    attribute("n_subjects", H5T_STD_I64LE, H5T_NATIVE_INT64, &n_subjects);
    attribute("n_timepoints", H5T_STD_I64LE, H5T_NATIVE_INT64, &rows);
    attribute("atlas", header.atlas);
    attribute("converter", header.converter);
    attribute("preprocessing", header.preprocessing);
    if (!header.atlas_sha256.empty()) attribute("atlas_sha256", header.atlas_sha256);
    if (!header.preprocessing_options.empty()) attribute("preprocessing_options", header.preprocessing_options);

    std::vector<std::string> labels = header.parcel_labels;
    if (labels.empty())
      for (int64_t p = 0; p < header.n_parcels; ++p) labels.push_back("parcel-" + std::to_string(p));
    strings("/parcels/labels", labels);
    if (!header.parcel_coords.empty())
      numbers("/parcels/coords", H5T_IEEE_F32LE, header.parcel_coords, {static_cast<hsize_t>(header.n_parcels), 3});

    std::vector<int64_t> offset, length;
    std::vector<int32_t> subject;
    std::vector<double> tr;
    std::vector<std::string> session, study, task, site, source;
    for (const auto& r : runs) {
      offset.push_back(r.offset);
      length.push_back(r.length);
      subject.push_back(index.at(r.subject));
      tr.push_back(r.tr);
      session.push_back(r.session);
      study.push_back(r.study);
      task.push_back(r.task);
      site.push_back(r.site);
      source.push_back(r.source);
    }
    numbers("/runs/offset", H5T_STD_I64LE, offset);
    numbers("/runs/length", H5T_STD_I64LE, length);
    numbers("/runs/subject", H5T_STD_I32LE, subject);
    numbers("/runs/tr", H5T_IEEE_F64LE, tr);
    strings("/runs/session", session);
    strings("/runs/study", study);
    strings("/runs/task", task);
    strings("/runs/site", site);
    strings("/runs/source", source);
    if (!header.label_names.empty()) strings("/runs/label_names", header.label_names);
    if (!header.stimulus_ids.empty()) {
      strings("/stimuli/id", header.stimulus_ids);
      if (!header.stimulus_features.empty())
        numbers("/stimuli/features", H5T_IEEE_F32LE, header.stimulus_features,
                {header.stimulus_ids.size(), static_cast<hsize_t>(header.stimulus_dim)});
    }

    std::vector<std::string> id, sex, diagnosis;
    std::vector<float> age, scores;
    const size_t k = header.score_names.size();
    for (const auto& s : subjects) {
      id.push_back(s.id);
      age.push_back(s.age);
      sex.push_back(s.sex);
      diagnosis.push_back(s.diagnosis);
      for (size_t j = 0; j < k; ++j) scores.push_back(s.scores.empty() ? NAN : s.scores[j]);
    }
    strings("/subjects/id", id);
    numbers("/subjects/age", H5T_IEEE_F32LE, age);
    strings("/subjects/sex", sex);
    strings("/subjects/diagnosis", diagnosis);
    if (k > 0) {
      strings("/subjects/score_names", header.score_names);
      numbers("/subjects/scores", H5T_IEEE_F32LE, scores, {subjects.size(), k});
    }
  }

  // Closes the file; returns "" or the reason it failed.
  std::string close() {
    timeseries.reset();
    stim.reset();
    label.reset();
    stim_index.reset();
    if (!file.close()) return "cannot close " + tmp + ": " + h5::reason();
    return "";
  }
};

namespace {

// fsync + rename of a closed temporary file; "" or the reason.
std::string publish(const std::string& tmp, const std::string& path) {
  // HDF5's drivers do not fsync on close; the rename must not become visible before the data.
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  std::string reason;
  if (fd < 0 || ::fsync(fd) != 0) reason = "cannot fsync " + tmp + ": " + std::strerror(errno);
  if (fd >= 0) ::close(fd);
  if (reason.empty() && std::rename(tmp.c_str(), path.c_str()) != 0)
    reason = "cannot rename " + tmp + " to it: " + std::strerror(errno);
  if (!reason.empty()) std::remove(tmp.c_str());
  return reason;
}

}  // namespace

ShardWriter::ShardWriter(const std::string& path, const ShardHeader& header) : file_(std::make_unique<File>()) {
  h5::Quiet quiet;
  const std::string bad = check_header(header);
  require(bad.empty(), path, ": ", bad);
  file_->path = path;
  file_->tmp = path + ".tmp";
  file_->header = header;
  file_->dxpl = h5::Id(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  file_->create(H5P_DEFAULT, 0);
}

ShardWriter::~ShardWriter() {
  if (committed_) return;
  h5::Quiet quiet;
  file_->close();
  std::remove(file_->tmp.c_str());
}

void ShardWriter::add_subject(const Subject& subject) {
  const std::string bad = check_subject(file_->header, subject);
  require(bad.empty(), file_->path, ": ", bad);
  subjects_.push_back(subject);
}

void ShardWriter::add_run(const RunView& run) {
  require(!committed_, file_->path, ": add_run after commit");
  const std::string bad = check_run(run);
  require(bad.empty(), file_->path, ": ", bad);
  h5::Quiet quiet;
  file_->extend(rows_ + run.meta.length);
  file_->write_block(rows_, run.meta.length, run.timeseries, run.stim_embedding, run.labels, run.stimulus);
  runs_.push_back(run.meta);
  runs_.back().offset = rows_;
  rows_ += run.meta.length;
}

void ShardWriter::commit() {
  require(!committed_, file_->path, ": commit() called twice");
  require(!runs_.empty(), file_->path, ": a shard needs at least one run");
  h5::Quiet quiet;
  file_->write_tables(runs_, subjects_);
  std::string reason = file_->close();
  if (reason.empty()) reason = publish(file_->tmp, file_->path);
  committed_ = true;
  if (!reason.empty()) {
    std::remove(file_->tmp.c_str());
    fail(file_->path, ": ", reason);
  }
}

#ifdef BFM_WITH_MPI

namespace {

// Flat bytes for MPI: the metadata of a rank's runs and subjects.
class Bytes {
 public:
  std::vector<char> data;
  size_t at = 0;
  void put(const void* p, size_t n) { data.insert(data.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n); }
  template <class T>
  void put(T v) { put(&v, sizeof v); }
  void put(const std::string& s) {
    put<uint64_t>(s.size());
    put(s.data(), s.size());
  }
  void get(void* p, size_t n) {
    std::memcpy(p, data.data() + at, n);
    at += n;
  }
  template <class T>
  T get() {
    T v;
    get(&v, sizeof v);
    return v;
  }
  std::string get_string() {
    std::string s(get<uint64_t>(), '\0');
    get(s.data(), s.size());
    return s;
  }
};

void put_run(Bytes& b, const Run& r) {
  for (const std::string* s : {&r.subject, &r.session, &r.study, &r.task, &r.site, &r.source}) b.put(*s);
  b.put(r.tr);
  b.put(r.length);
}
Run get_run(Bytes& b) {
  Run r;
  for (std::string* s : {&r.subject, &r.session, &r.study, &r.task, &r.site, &r.source}) *s = b.get_string();
  r.tr = b.get<double>();
  r.length = b.get<int64_t>();
  return r;
}
void put_subject(Bytes& b, const Subject& s) {
  b.put(s.id);
  b.put(s.age);
  b.put(s.sex);
  b.put(s.diagnosis);
  b.put<uint64_t>(s.scores.size());
  b.put(s.scores.data(), s.scores.size() * sizeof(float));
}
Subject get_subject(Bytes& b) {
  Subject s;
  s.id = b.get_string();
  s.age = b.get<float>();
  s.sex = b.get_string();
  s.diagnosis = b.get_string();
  s.scores.resize(b.get<uint64_t>());
  b.get(s.scores.data(), s.scores.size() * sizeof(float));
  return s;
}

// Every rank throws the same error, the lowest failing rank's message (which names the file), or none when all are
// fine.
void agree_or_throw(MPI_Comm comm, const std::string& mine) {
  int rank;
  MPI_Comm_rank(comm, &rank);
  int first = mine.empty() ? INT_MAX : rank;
  MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == INT_MAX) return;
  uint64_t n = mine.size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, first, comm);
  std::string message = rank == first ? mine : std::string(n, '\0');
  MPI_Bcast(message.data(), static_cast<int>(n), MPI_CHAR, first, comm);
  fail(message, " (rank ", first, ")");
}

}  // namespace

void write_shard_collective(MPI_Comm comm, const std::string& path, const ShardHeader& header,
                            const std::vector<Subject>& subjects, const std::vector<RunView>& runs) {
  h5::Quiet quiet;
  int rank, ranks;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);

  std::string bad = check_header(header);
  for (const auto& r : runs)
    if (bad.empty()) bad = check_run(r);
  for (const auto& s : subjects)
    if (bad.empty()) bad = check_subject(header, s);
  agree_or_throw(comm, bad.empty() ? "" : path + ": " + bad);

  // Everyone's metadata, in rank order.
  Bytes mine;
  mine.put<uint64_t>(runs.size());
  for (const auto& r : runs) put_run(mine, r.meta);
  mine.put<uint64_t>(subjects.size());
  for (const auto& s : subjects) put_subject(mine, s);
  std::vector<int> sizes(static_cast<size_t>(ranks)), displs(static_cast<size_t>(ranks), 0);
  const int my_size = static_cast<int>(mine.data.size());
  MPI_Allgather(&my_size, 1, MPI_INT, sizes.data(), 1, MPI_INT, comm);
  for (int r = 1; r < ranks; ++r) displs[r] = displs[r - 1] + sizes[r - 1];
  Bytes all;
  all.data.resize(static_cast<size_t>(displs.back() + sizes.back()));
  MPI_Allgatherv(mine.data.data(), my_size, MPI_CHAR, all.data.data(), sizes.data(), displs.data(), MPI_CHAR, comm);
  std::vector<Run> all_runs;
  std::vector<Subject> all_subjects;
  int64_t rows = 0, my_row0 = 0, my_rows = 0;
  for (int r = 0; r < ranks; ++r) {
    const auto n_runs = all.get<uint64_t>();
    if (r == rank) my_row0 = rows;
    for (uint64_t i = 0; i < n_runs; ++i) {
      all_runs.push_back(get_run(all));
      all_runs.back().offset = rows;
      rows += all_runs.back().length;
      if (r == rank) my_rows += all_runs.back().length;
    }
    const auto n_subjects = all.get<uint64_t>();
    for (uint64_t i = 0; i < n_subjects; ++i) all_subjects.push_back(get_subject(all));
  }
  agree_or_throw(comm, all_runs.empty() && rank == 0 ? path + ": a shard needs at least one run" : "");

  // This rank's rows, packed (its runs are consecutive in the file).
  const auto P = static_cast<size_t>(header.n_parcels), S = static_cast<size_t>(header.stimulus_dim);
  std::vector<float> ts(static_cast<size_t>(my_rows) * P), stim(header.stimulus_dim > 0 ? my_rows * S : 0, 0.0f);
  std::vector<int32_t> labels(header.labels ? static_cast<size_t>(my_rows) : 0, -1);
  std::vector<int32_t> stimulus(header.stimulus_ids.empty() ? 0 : static_cast<size_t>(my_rows), -1);
  size_t at = 0;
  for (const auto& r : runs) {
    const auto n = static_cast<size_t>(r.meta.length);
    std::copy(r.timeseries, r.timeseries + n * P, ts.begin() + static_cast<std::ptrdiff_t>(at * P));
    if (!stim.empty() && r.stim_embedding)
      std::copy(r.stim_embedding, r.stim_embedding + n * S, stim.begin() + static_cast<std::ptrdiff_t>(at * S));
    if (!labels.empty() && r.labels)
      std::copy(r.labels, r.labels + n, labels.begin() + static_cast<std::ptrdiff_t>(at));
    if (!stimulus.empty() && r.stimulus)
      std::copy(r.stimulus, r.stimulus + n, stimulus.begin() + static_cast<std::ptrdiff_t>(at));
    at += n;
  }

  ShardWriter::File file;
  file.path = path;
  file.tmp = path + ".tmp";
  file.header = header;
  file.writes_tables = rank == 0;
  file.dxpl = h5::Id(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  h5::Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.ok() || H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL) < 0 ||
      H5Pset_dxpl_mpio(file.dxpl.get(), H5FD_MPIO_COLLECTIVE) < 0)
    file.h5_fail("cannot set up MPI-IO");
  std::string reason;
  try {
    file.create(fapl.get(), rows);
    file.write_block(my_row0, my_rows, ts.data(), stim.empty() ? nullptr : stim.data(),
                     labels.empty() ? nullptr : labels.data(), stimulus.empty() ? nullptr : stimulus.data());
    file.write_tables(all_runs, all_subjects);
  } catch (const Error& e) {
    reason = e.what();  // a collective call failed; other ranks most likely failed in the same call
  }
  const std::string closed = file.close();
  if (reason.empty() && !closed.empty()) reason = path + ": " + closed;
  if (!reason.empty() && rank == 0) std::remove(file.tmp.c_str());
  agree_or_throw(comm, reason);
  if (rank == 0) {
    reason = publish(file.tmp, path);
    if (!reason.empty()) reason = path + ": " + reason;
  }
  agree_or_throw(comm, reason);
}

#endif  // BFM_WITH_MPI

}  // namespace bfm::io

#endif  // BFM_WITH_HDF5
