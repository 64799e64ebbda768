// Plain named arrays in HDF5, through the C API with the default (sec2) file driver.
//
// The default file access property list works with both of the HDF5 builds this project links: Debian's parallel
// one (when MPI is on) needs no MPI_Init for it, since only the mpio driver talks to MPI. HDF5's own error printing
// is switched off around every call; a failure becomes one bfm::Error with the file, the dataset and the innermost
// reason from HDF5's error stack.
//
// Writes are float32 (H5T_IEEE_F32LE), contiguous; a shape [] is a rank-0 (scalar) dataspace, which h5py reads as a
// 0-d array. Reads convert inside HDF5 (float16/32/64 to native float) or, for masks, check every integer value.
#include "io/h5_arrays.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <type_traits>

#include "io/h5_handles.h"
#include "base/error.h"

namespace bfm::io {

static_assert(std::is_same_v<hid_t, int64_t>, "the header stores hid_t as int64_t");

namespace {

// Whether `name` ("x", "group/x", "/x") names a link in the file. H5Lexists fails when a parent is missing, so each
// prefix is checked in turn.
bool link_exists(hid_t file, const std::string& name) {
  std::string prefix;
  size_t start = 0;
  while (start < name.size()) {
    size_t stop = name.find('/', start);
    if (stop == std::string::npos) stop = name.size();
    if (stop > start) {
      prefix.push_back('/');
      prefix.append(name, start, stop - start);
      if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return false;
      }
    }
    start = stop + 1;
  }
  return !prefix.empty();
}

bool dataset_exists(hid_t file, const std::string& name) {
  if (!link_exists(file, name)) return false;
  h5::Id obj(H5Oopen(file, name.c_str(), H5P_DEFAULT), H5Oclose);  // fails for a dangling soft link
  if (!obj.ok()) {
    H5Eclear2(H5E_DEFAULT);
    return false;
  }
  return H5Iget_type(obj.get()) == H5I_DATASET;
}

const char* class_name(H5T_class_t cls) {
  switch (cls) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "floating-point";
    case H5T_STRING: return "string";
    case H5T_BITFIELD: return "bitfield";
    case H5T_OPAQUE: return "opaque";
    case H5T_COMPOUND: return "compound";
    case H5T_REFERENCE: return "reference";
    case H5T_ENUM: return "enum";
    case H5T_VLEN: return "variable-length";
    case H5T_ARRAY: return "array";
    default: return "unknown";
  }
}

std::string index_str(size_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = static_cast<int64_t>(flat % static_cast<size_t>(shape[d]));
    flat /= static_cast<size_t>(shape[d]);
  }
  return shape_string(idx);
}

// An open dataset with its stored type and shape.
struct OpenDataset {
  h5::Id dataset;
  h5::Id type;
  std::vector<int64_t> shape;
  size_t count = 1;
};

void open_dataset(const std::string& path, hid_t file, const std::string& name, OpenDataset& out) {
  require(dataset_exists(file, name), path, ": no dataset '", name, "'");
  out.dataset = h5::Id(H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose);
  require(out.dataset.ok(), path, ": cannot open dataset '", name, "': ", h5::reason());
  out.type = h5::Id(H5Dget_type(out.dataset.get()), H5Tclose);
  h5::Id space(H5Dget_space(out.dataset.get()), H5Sclose);
  require(out.type.ok() && space.ok(), path, ": dataset '", name, "': ", h5::reason());
  require(H5Sget_simple_extent_type(space.get()) != H5S_NULL, path, ": dataset '", name,
          "' has a null dataspace (no data)");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  require(rank >= 0, path, ": dataset '", name, "': ", h5::reason());
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  for (hsize_t d : dims) {
    out.shape.push_back(static_cast<int64_t>(d));
    out.count *= static_cast<size_t>(d);
  }
}

// Stops a conversion that would leave float32's range (HDF5 would otherwise clip silently).
H5T_conv_ret_t abort_on_overflow(H5T_conv_except_t except, hid_t, hid_t, void*, void*, void* hit) {
  if (except == H5T_CONV_EXCEPT_RANGE_HI || except == H5T_CONV_EXCEPT_RANGE_LOW) {
    *static_cast<bool*>(hit) = true;
    return H5T_CONV_ABORT;
  }
  return H5T_CONV_UNHANDLED;
}

// One stored integer of `size` bytes and the given signedness, widened.
template <class T>
int64_t load_as(const unsigned char* p, bool& too_big) {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::is_same_v<T, uint64_t>) {
    if (v > static_cast<uint64_t>(INT64_MAX)) {
      too_big = true;
      return INT64_MAX;
    }
  }
  return static_cast<int64_t>(v);
}

int64_t load_integer(const unsigned char* p, size_t size, bool is_signed, bool& too_big) {
  switch (size) {
    case 1: return is_signed ? load_as<int8_t>(p, too_big) : load_as<uint8_t>(p, too_big);
    case 2: return is_signed ? load_as<int16_t>(p, too_big) : load_as<uint16_t>(p, too_big);
    case 4: return is_signed ? load_as<int32_t>(p, too_big) : load_as<uint32_t>(p, too_big);
    default: return is_signed ? load_as<int64_t>(p, too_big) : load_as<uint64_t>(p, too_big);
  }
}

}  // namespace

H5ArrayReader::H5ArrayReader(const std::string& path) : path_(path), file_(-1) {
  h5::Quiet quiet;
  std::error_code ec;
  require(std::filesystem::exists(path, ec), path, ": no such file");
  require(!std::filesystem::is_directory(path, ec), path, ": is a directory, not an HDF5 file");
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  require(is_hdf5 >= 0, path, ": cannot read: ", h5::reason());
  require(is_hdf5 > 0, path, ": not an HDF5 file");
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  require(file_ >= 0, path, ": cannot open HDF5 file: ", h5::reason());
}

H5ArrayReader::~H5ArrayReader() {
  if (file_ < 0) return;
  h5::Quiet quiet;
  H5Fclose(file_);
}

bool H5ArrayReader::has(const std::string& dataset) const {
  h5::Quiet quiet;
  return dataset_exists(file_, dataset);
}

Array<float> H5ArrayReader::read_f32(const std::string& dataset) const {
  h5::Quiet quiet;
  OpenDataset ds;
  open_dataset(path_, file_, dataset, ds);
  const H5T_class_t cls = H5Tget_class(ds.type.get());
  require(cls == H5T_FLOAT, path_, ": dataset '", dataset, "' has ", class_name(cls),
          " type; expected floating point (float16/32/64)");
  Array<float> out;
  out.shape = ds.shape;
  out.data.resize(ds.count);
  if (ds.count == 0) return out;
  h5::Id xfer(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  bool overflow = false;
  require(xfer.ok() && H5Pset_type_conv_cb(xfer.get(), abort_on_overflow, &overflow) >= 0, path_, ": dataset '",
          dataset, "': ", h5::reason());
  const herr_t rc = H5Dread(ds.dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, xfer.get(), out.data.data());
  require(!overflow, path_, ": dataset '", dataset, "' holds a value out of float32 range");
  require(rc >= 0, path_, ": cannot read dataset '", dataset, "': ", h5::reason());
  return out;
}

Array<uint8_t> H5ArrayReader::read_u8(const std::string& dataset) const {
  h5::Quiet quiet;
  OpenDataset ds;
  open_dataset(path_, file_, dataset, ds);
  const H5T_class_t cls = H5Tget_class(ds.type.get());
  // Integers of any width, and enums over an integer (h5py stores numpy bool as enum {FALSE=0, TRUE=1} over int8).
  h5::Id base(cls == H5T_ENUM ? H5Tget_super(ds.type.get()) : H5Tcopy(ds.type.get()), H5Tclose);
  require((cls == H5T_INTEGER || cls == H5T_ENUM) && base.ok() && H5Tget_class(base.get()) == H5T_INTEGER, path_,
          ": dataset '", dataset, "' has ", class_name(cls), " type; expected integer or bool values 0..255");
  Array<uint8_t> out;
  out.shape = ds.shape;
  out.data.resize(ds.count);
  if (ds.count == 0) return out;

  // Read in the stored width (native byte order), then range-check each value: HDF5 would clip silently.
  h5::Id native(H5Tget_native_type(ds.type.get(), H5T_DIR_ASCEND), H5Tclose);
  require(native.ok(), path_, ": dataset '", dataset, "': ", h5::reason());
  const size_t size = H5Tget_size(native.get());
  require(size == 1 || size == 2 || size == 4 || size == 8, path_, ": dataset '", dataset, "' has ", size,
          "-byte integers; expected 1, 2, 4 or 8");
  const bool is_signed = H5Tget_sign(base.get()) == H5T_SGN_2;
  std::vector<unsigned char> raw(ds.count * size);
  require(H5Dread(ds.dataset.get(), native.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()) >= 0, path_,
          ": cannot read dataset '", dataset, "': ", h5::reason());
  for (size_t i = 0; i < ds.count; ++i) {
    bool too_big = false;
    const int64_t v = load_integer(raw.data() + i * size, size, is_signed, too_big);
    require(!too_big && v >= 0 && v <= 255, path_, ": dataset '", dataset, "' holds ",
            too_big ? std::string("a value above 2^63") : std::to_string(v), " at ", index_str(i, ds.shape),
            ", out of range 0..255");
    out.data[i] = static_cast<uint8_t>(v);
  }
  return out;
}

H5ArrayWriter::H5ArrayWriter(const std::string& path) : path_(path), file_(-1) {
  h5::Quiet quiet;
  const std::string tmp = path + ".tmp";
  // No object timestamps: the same arrays are the same bytes whenever they are written.
  h5::Id fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  require(fcpl.ok() && H5Pset_obj_track_times(fcpl.get(), 0) >= 0, path, ": cannot set up ", tmp, ": ", h5::reason());
  file_ = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT);
  require(file_ >= 0, path, ": cannot create ", tmp, ": ", h5::reason());
}

H5ArrayWriter::~H5ArrayWriter() {
  if (file_ < 0) return;
  h5::Quiet quiet;
  H5Fclose(file_);
  std::remove((path_ + ".tmp").c_str());
}

void H5ArrayWriter::write_f32(const std::string& dataset, const std::vector<int64_t>& shape, const float* data) {
  write(dataset, shape, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data);
}

void H5ArrayWriter::write_f64(const std::string& dataset, const std::vector<int64_t>& shape, const double* data) {
  write(dataset, shape, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, data);
}

void H5ArrayWriter::write_i64(const std::string& dataset, const std::vector<int64_t>& shape, const int64_t* data) {
  write(dataset, shape, H5T_STD_I64LE, H5T_NATIVE_INT64, data);
}

void H5ArrayWriter::write_strings(const std::string& dataset, const std::vector<std::string>& values) {
  size_t width = 1;
  for (const std::string& v : values) width = std::max(width, v.size());
  std::vector<char> packed(values.size() * width, '\0');
  for (size_t i = 0; i < values.size(); ++i) std::copy(values[i].begin(), values[i].end(), &packed[i * width]);
  h5::Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  require(type.ok() && H5Tset_size(type.get(), width) >= 0 && H5Tset_strpad(type.get(), H5T_STR_NULLPAD) >= 0 &&
              H5Tset_cset(type.get(), H5T_CSET_UTF8) >= 0,
          path_, ": dataset '", dataset, "': ", h5::reason());
  write(dataset, {static_cast<int64_t>(values.size())}, type.get(), type.get(), packed.data());
}

void H5ArrayWriter::write(const std::string& dataset, const std::vector<int64_t>& shape, int64_t file_type,
                          int64_t mem_type, const void* data) {
  h5::Quiet quiet;
  require(file_ >= 0, path_, ": dataset '", dataset, "' written after commit()");
  require(!link_exists(file_, dataset), path_, ": dataset '", dataset, "' is written twice");
  std::vector<hsize_t> dims;
  size_t count = 1;
  for (int64_t d : shape) {
    require(d >= 0, path_, ": dataset '", dataset, "' has a negative dimension ", d);
    dims.push_back(static_cast<hsize_t>(d));
    count *= static_cast<size_t>(d);
  }
  require(count == 0 || data != nullptr, path_, ": dataset '", dataset, "' has no data");

  h5::Id space(shape.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(),
                                                                      nullptr),
             H5Sclose);
  h5::Id link_props(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  require(space.ok() && link_props.ok() && H5Pset_create_intermediate_group(link_props.get(), 1) >= 0, path_,
          ": dataset '", dataset, "': ", h5::reason());
  // The groups on its path, created here without timestamps (intermediate groups would get them).
  h5::Id gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
  h5::Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  require(gcpl.ok() && dcpl.ok() && H5Pset_obj_track_times(gcpl.get(), 0) >= 0 &&
              H5Pset_obj_track_times(dcpl.get(), 0) >= 0,
          path_, ": dataset '", dataset, "': ", h5::reason());
  for (size_t slash = dataset.find('/', 1); slash != std::string::npos; slash = dataset.find('/', slash + 1)) {
    const std::string group = dataset.substr(0, slash);
    if (group.empty() || link_exists(file_, group)) continue;
    h5::Id g(H5Gcreate2(file_, group.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
    require(g.ok(), path_, ": cannot create group '", group, "': ", h5::reason());
  }
  h5::Id ds(H5Dcreate2(file_, dataset.c_str(), file_type, space.get(), link_props.get(), dcpl.get(), H5P_DEFAULT),
          H5Dclose);
  require(ds.ok(), path_, ": cannot create dataset '", dataset, "': ", h5::reason());
  if (count > 0)
    require(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, path_,
            ": cannot write dataset '", dataset, "': ", h5::reason());
}

void H5ArrayWriter::write_scalar_f32(const std::string& dataset, float value) { write_f32(dataset, {}, &value); }

void H5ArrayWriter::commit() {
  h5::Quiet quiet;
  require(file_ >= 0, path_, ": commit() called twice");
  const std::string tmp = path_ + ".tmp";
  const herr_t rc = H5Fclose(file_);
  file_ = -1;
  std::string reason;
  if (rc < 0) {
    reason = "cannot close " + tmp + ": " + h5::reason();
  } else {
    // HDF5's sec2 driver does not fsync on close; the rename must not become visible before the data.
    const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) reason = "cannot fsync " + tmp + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    if (reason.empty() && std::rename(tmp.c_str(), path_.c_str()) != 0)
      reason = "cannot rename " + tmp + " to it: " + std::strerror(errno);
  }
  if (!reason.empty()) {
    std::remove(tmp.c_str());
    fail(path_, ": ", reason);
  }
}

}  // namespace bfm::io
