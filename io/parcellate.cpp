#include "io/parcellate.h"

#include <nifti2_io.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <sstream>

#include "base/error.h"

namespace bfm::io {
namespace {

// An opened NIfTI file: its header (nifti_clib's struct) and the stream positioned at the first voxel. Voxels are
// read with znzread, not nifti_read_buffer, because the latter silently turns NaN and inf into 0.
std::string dims_of(const nifti_image& h);

struct NiftiStream {
  std::string path;
  std::unique_ptr<nifti_image, void (*)(nifti_image*)> header{nullptr, nifti_image_free};
  znzFile file = nullptr;

  explicit NiftiStream(const std::string& p) : path(p) {
    nifti_set_debug_level(0);
    char mode[] = "rb";
    nifti_image* nim = nullptr;
    file = nifti_image_open(p.c_str(), mode, &nim);
    header.reset(nim);
    require(nim != nullptr, p, ": not a readable NIfTI file (missing, not NIfTI-1/2, or its header is truncated)");
    require(!znz_isnull(file), p, ": cannot open its voxel data ", nim->iname ? nim->iname : "");
    require(znzseek(file, static_cast<znz_off_t>(nim->iname_offset), SEEK_SET) >= 0, p,
            ": cannot seek to its voxel data at byte ", nim->iname_offset);
    check_size_claimed();
  }

  // A header that claims more voxels than its file can hold (damaged, or dims of another image) is named before
  // anything is allocated for it. Uncompressed: the file's size after the header. Gzipped: deflate expands at most
  // 1032-fold, so a claim above 1032 x the file's size cannot be true.
  void check_size_claimed() const {
    const nifti_image& h = *header;
    const std::string data_file = h.iname ? h.iname : path;
    std::error_code ec;
    const auto size = std::filesystem::file_size(data_file, ec);
    if (ec) return;  // the read then says what is wrong
    const long double claimed = static_cast<long double>(h.nvox) * h.nbyper;
    const bool gz = data_file.size() > 3 && data_file.compare(data_file.size() - 3, 3, ".gz") == 0;
    const long double room = gz ? 1032.0L * size : static_cast<long double>(size) - h.iname_offset;
    if (claimed > room)
      fail(path, ": its header claims dims ", dims_of(h), " (", std::llround(static_cast<double>(claimed) / 1e6),
           " MB of voxels), more than the file can hold (", size, " bytes", gz ? ", gzipped" : "",
           "): the header is damaged or the file truncated");
  }
  ~NiftiStream() {
    if (!znz_isnull(file)) znzclose(file);
  }
  NiftiStream(const NiftiStream&) = delete;
  NiftiStream& operator=(const NiftiStream&) = delete;

  const nifti_image& h() const { return *header; }

  // Reads the next n voxels (in file order) as float64 with scl_slope/scl_inter applied.
  void read(int64_t n, std::vector<unsigned char>& raw, double* out) {
    const auto bytes = static_cast<size_t>(n) * static_cast<size_t>(h().nbyper);
    raw.resize(bytes);
    const size_t got = znzread(raw.data(), 1, bytes, file);
    require(got == bytes, path, ": truncated or corrupt: read ", got, " of ", bytes, " voxel bytes");
    if (h().swapsize > 1 && h().byteorder != nifti_short_order())
      nifti_swap_Nbytes(static_cast<size_t>(n), h().swapsize, raw.data());
    convert(raw.data(), n, out);
    const double slope = h().scl_slope, inter = h().scl_inter;
    if (std::isfinite(slope) && slope != 0 && !(slope == 1 && inter == 0))
      for (int64_t i = 0; i < n; ++i) out[i] = out[i] * slope + (std::isfinite(inter) ? inter : 0.0);
  }

 private:
  template <class T>
  static void widen(const unsigned char* raw, int64_t n, double* out) {
    for (int64_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, raw + i * sizeof(T), sizeof(T));
      out[i] = static_cast<double>(v);
    }
  }
  void convert(const unsigned char* raw, int64_t n, double* out) const {
    switch (h().datatype) {
      case NIFTI_TYPE_UINT8: return widen<uint8_t>(raw, n, out);
      case NIFTI_TYPE_INT8: return widen<int8_t>(raw, n, out);
      case NIFTI_TYPE_UINT16: return widen<uint16_t>(raw, n, out);
      case NIFTI_TYPE_INT16: return widen<int16_t>(raw, n, out);
      case NIFTI_TYPE_UINT32: return widen<uint32_t>(raw, n, out);
      case NIFTI_TYPE_INT32: return widen<int32_t>(raw, n, out);
      case NIFTI_TYPE_UINT64: return widen<uint64_t>(raw, n, out);
      case NIFTI_TYPE_INT64: return widen<int64_t>(raw, n, out);
      case NIFTI_TYPE_FLOAT32: return widen<float>(raw, n, out);
      case NIFTI_TYPE_FLOAT64: return widen<double>(raw, n, out);
      default:
        fail(path, ": voxel datatype ", nifti_datatype_string(h().datatype), " (", h().datatype,
             ") is not a real scalar type");
    }
  }
};

std::string dims_of(const nifti_image& h) {
  std::ostringstream os;
  os << "[";
  for (int d = 1; d <= h.dim[0] && d <= 7; ++d) os << (d > 1 ? ", " : "") << h.dim[d];
  return os.str() + "]";
}

// Voxel index -> world mm: the sform when its code is set, else the qform (NIfTI's own order of preference).
const nifti_dmat44& to_world(const nifti_image& h, const std::string& path) {
  if (h.sform_code > 0) return h.sto_xyz;
  if (h.qform_code > 0) return h.qto_xyz;
  fail(path, ": has neither an sform nor a qform (both codes are 0), so it cannot be placed in world space");
}
const nifti_dmat44& to_voxel(const nifti_image& h) { return h.sform_code > 0 ? h.sto_ijk : h.qto_ijk; }

void apply(const nifti_dmat44& m, const double in[3], double out[3]) {
  for (int r = 0; r < 3; ++r) out[r] = m.m[r][0] * in[0] + m.m[r][1] * in[1] + m.m[r][2] * in[2] + m.m[r][3];
}

// pixdim[4] in seconds, read from the raw header: nifti_clib's nifti_image turns a pixdim of 0 into 1.
double header_tr(const nifti_image& h, const std::string& path) {
  int version = 0;
  void* raw = nifti_read_header(path.c_str(), &version, 1);
  require(raw != nullptr, path, ": cannot re-read its header");
  const double dt = version == 2 ? static_cast<nifti_2_header*>(raw)->pixdim[4]
                                 : static_cast<double>(static_cast<nifti_1_header*>(raw)->pixdim[4]);
  std::free(raw);
  switch (h.time_units) {
    case NIFTI_UNITS_MSEC: return dt * 1e-3;
    case NIFTI_UNITS_USEC: return dt * 1e-6;
    default: return dt;  // seconds, or unknown units taken as seconds
  }
}

}  // namespace

ScanTiming scan_timing(const std::string& scan_path, double tr) {
  NiftiStream scan(scan_path);
  const nifti_image& h = scan.h();
  require(h.dim[0] >= 4 && h.nt >= 2 && h.nu * h.nv * h.nw == 1, scan_path,
          ": a scan must be 4-D (x, y, z, time) with at least 2 time points, this one has dims ", dims_of(h));
  ScanTiming t;
  t.n_time = h.nt;
  t.tr = tr > 0 ? tr : header_tr(h, scan_path);
  require(std::isfinite(t.tr) && t.tr > 0, scan_path, ": no TR: none was given and the header's pixdim[4] is ", t.tr,
          " s (", nifti_units_string(h.time_units), ")");
  return t;
}

ParcelSeries parcellate(const std::string& scan_path, const std::string& atlas_path,
                        const ParcellateOptions& options) {
  // --- the atlas: integer labels on a 3-D grid
  std::vector<int64_t> atlas_labels;
  int64_t ax = 0, ay = 0, az = 0;
  nifti_dmat44 atlas_ijk{};
  {
    NiftiStream atlas(atlas_path);
    const nifti_image& h = atlas.h();
    require(h.dim[0] >= 3 && h.nt * h.nu * h.nv * h.nw == 1, atlas_path,
            ": an atlas must be a 3-D label image, this one has dims ", dims_of(h));
    to_world(h, atlas_path);
    atlas_ijk = to_voxel(h);
    ax = h.nx, ay = h.ny, az = h.nz;
    std::vector<double> values(static_cast<size_t>(h.nvox));
    std::vector<unsigned char> raw;
    atlas.read(h.nvox, raw, values.data());
    atlas_labels.resize(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      const double v = values[i];
      require(std::isfinite(v) && v >= 0 && v == std::floor(v) && v < 9.0e15, atlas_path,
              ": atlas labels must be non-negative integers, voxel ", i, " holds ", v);
      atlas_labels[i] = static_cast<int64_t>(v);
    }
  }
  ParcelSeries out;
  out.labels = atlas_labels;
  std::sort(out.labels.begin(), out.labels.end());
  out.labels.erase(std::unique(out.labels.begin(), out.labels.end()), out.labels.end());
  if (!out.labels.empty() && out.labels.front() == 0) out.labels.erase(out.labels.begin());
  require(!out.labels.empty(), atlas_path, ": atlas has no nonzero label");
  const auto P = static_cast<int64_t>(out.labels.size());

  // --- the scan's header, and where each of its voxels falls in the atlas
  NiftiStream scan(scan_path);
  const nifti_image& h = scan.h();
  require(h.dim[0] >= 4 && h.nt >= 2 && h.nu * h.nv * h.nw == 1, scan_path,
          ": a scan must be 4-D (x, y, z, time) with at least 2 time points, this one has dims ", dims_of(h));
  const int64_t T = h.nt, V = h.nx * h.ny * h.nz;
  out.source_tr = options.tr > 0 ? options.tr : header_tr(h, scan_path);
  require(std::isfinite(out.source_tr) && out.source_tr > 0, scan_path, ": no TR: none was given and the header's "
          "pixdim[4] is ", out.source_tr, " s (", nifti_units_string(h.time_units), ")");

  const nifti_dmat44& scan_xyz = to_world(h, scan_path);
  std::vector<int32_t> parcel_of(static_cast<size_t>(V), -1);  // [V] parcel index, or -1
  out.voxel_count.assign(static_cast<size_t>(P), 0);
  for (int64_t k = 0, v = 0; k < h.nz; ++k)
    for (int64_t j = 0; j < h.ny; ++j)
      for (int64_t i = 0; i < h.nx; ++i, ++v) {
        const double ijk[3] = {double(i), double(j), double(k)};
        double xyz[3], a[3];
        apply(scan_xyz, ijk, xyz);
        apply(atlas_ijk, xyz, a);
        const double ai = std::floor(a[0] + 0.5), aj = std::floor(a[1] + 0.5), ak = std::floor(a[2] + 0.5);
        if (!(ai >= 0 && aj >= 0 && ak >= 0 && ai < double(ax) && aj < double(ay) && ak < double(az))) continue;
        const int64_t label = atlas_labels[static_cast<size_t>((int64_t(ak) * ay + int64_t(aj)) * ax + int64_t(ai))];
        if (label == 0) continue;
        const auto p = std::lower_bound(out.labels.begin(), out.labels.end(), label) - out.labels.begin();
        parcel_of[static_cast<size_t>(v)] = static_cast<int32_t>(p);
        ++out.voxel_count[static_cast<size_t>(p)];
        ++out.scan_voxels_in_atlas;
      }
  require(out.scan_voxels_in_atlas > 0, scan_path, ": does not overlap the atlas ", atlas_path,
          ": no voxel centre of the scan, mapped through both affines, falls on a nonzero atlas label "
          "(are the two in the same space? e.g. scanner space vs MNI)");

  // --- parcel means, a few volumes at a time; finite values only
  std::vector<double> sum(static_cast<size_t>(T * P), 0.0);
  std::vector<int64_t> count(static_cast<size_t>(T * P), 0);
  out.nonfinite_values.assign(static_cast<size_t>(P), 0);
  const int64_t chunk = std::max(1, options.volumes_per_read);
  std::vector<double> volumes(static_cast<size_t>(chunk * V));
  std::vector<unsigned char> raw;
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    scan.read(n * V, raw, volumes.data());
    for (int64_t dt = 0; dt < n; ++dt) {
      const double* vol = volumes.data() + dt * V;
      double* s = sum.data() + (t0 + dt) * P;
      int64_t* c = count.data() + (t0 + dt) * P;
      for (int64_t v = 0; v < V; ++v) {
        const int32_t p = parcel_of[static_cast<size_t>(v)];
        if (p < 0) continue;
        if (std::isfinite(vol[v])) {
          s[p] += vol[v];
          ++c[p];
        } else {
          ++out.nonfinite_values[static_cast<size_t>(p)];
        }
      }
    }
  }

  std::vector<double> x(static_cast<size_t>(T * P), 0.0);
  for (int64_t p = 0; p < P; ++p) {
    int64_t times_with_values = 0, first_missing = -1;
    for (int64_t t = 0; t < T; ++t) {
      if (count[t * P + p] > 0) {
        ++times_with_values;
        x[t * P + p] = sum[t * P + p] / static_cast<double>(count[t * P + p]);
      } else if (first_missing < 0) {
        first_missing = t;
      }
    }
    if (times_with_values == 0) {
      out.empty_labels.push_back(out.labels[static_cast<size_t>(p)]);
    } else {
      require(times_with_values == T, scan_path, ": parcel ", out.labels[static_cast<size_t>(p)], " (",
              out.voxel_count[static_cast<size_t>(p)], " voxels) has no finite value at time point ", first_missing,
              " but has some at others");
    }
  }

  int64_t T_out = T;
  preprocess_run(x, T_out, P, out.source_tr, options.preprocess);
  out.n_time = T_out;
  out.tr = options.preprocess.target_tr > 0 ? options.preprocess.target_tr : out.source_tr;
  out.series.assign(x.begin(), x.end());
  return out;
}

}  // namespace bfm::io
