// Stimulus feature tables (stimulus_features.h).
#include "io/stimulus_features.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "io/text_table.h"

#ifdef BFM_WITH_NPZ
#include "io/npz.h"
#endif

#ifdef BFM_WITH_HDF5
#include <hdf5.h>

#include "io/h5_handles.h"
#endif

namespace bfm::io {

namespace {

bool ends_with(const std::string& s, const char* ext) {
  const std::string e(ext);
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

#ifdef BFM_WITH_HDF5
void read_hdf5(StimulusTable& out) {
  h5::Quiet quiet;
  const std::string& path = out.path;
  h5::Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  require(file.ok(), path, ": not a readable HDF5 file: ", h5::reason());
  for (const char* name : {"ids", "features"})
    require(H5Lexists(file.get(), name, H5P_DEFAULT) > 0, path, ": no dataset '", name,
            "' (a stimulus table in HDF5 has ids [M] and features [M, S])");
  h5::Id ids(H5Dopen2(file.get(), "ids", H5P_DEFAULT), H5Dclose);
  h5::Id feats(H5Dopen2(file.get(), "features", H5P_DEFAULT), H5Dclose);
  require(ids.ok() && feats.ok(), path, ": cannot open ids / features: ", h5::reason());
  h5::Id ispace(H5Dget_space(ids.get()), H5Sclose), fspace(H5Dget_space(feats.get()), H5Sclose);
  hsize_t m[2] = {0, 0}, fs[2] = {0, 0};
  require(H5Sget_simple_extent_ndims(ispace.get()) == 1, path, ": ids must be 1-D");
  require(H5Sget_simple_extent_ndims(fspace.get()) == 2, path, ": features must be 2-D [stimuli, dimensions]");
  H5Sget_simple_extent_dims(ispace.get(), m, nullptr);
  H5Sget_simple_extent_dims(fspace.get(), fs, nullptr);
  require(fs[0] == m[0], path, ": ", m[0], " ids but ", fs[0], " rows of features");
  const size_t M = m[0];
  h5::Id type(H5Dget_type(ids.get()), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls == H5T_INTEGER) {
    std::vector<long long> v(M);
    if (M && H5Dread(ids.get(), H5T_NATIVE_LLONG, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
      fail(path, ": cannot read ids: ", h5::reason());
    for (long long x : v) out.ids.push_back(std::to_string(x));
  } else if (cls == H5T_STRING && H5Tis_variable_str(type.get()) > 0) {
    h5::Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    std::vector<char*> v(M, nullptr);
    if (M && H5Dread(ids.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
      fail(path, ": cannot read ids: ", h5::reason());
    for (char* s : v) out.ids.emplace_back(s ? s : "");
    H5Dvlen_reclaim(mem.get(), ispace.get(), H5P_DEFAULT, v.data());
  } else if (cls == H5T_STRING) {
    const size_t width = H5Tget_size(type.get());
    std::vector<char> buf(M * width);
    if (M && H5Dread(ids.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
      fail(path, ": cannot read ids: ", h5::reason());
    for (size_t i = 0; i < M; ++i) {
      std::string s(buf.data() + i * width, width);
      out.ids.push_back(s.substr(0, s.find('\0')));
    }
  } else {
    fail(path, ": ids must be strings or integers");
  }
  h5::Id ftype(H5Dget_type(feats.get()), H5Tclose);
  const H5T_class_t fcls = H5Tget_class(ftype.get());
  require(fcls == H5T_FLOAT || fcls == H5T_INTEGER, path, ": features must be numbers");
  out.dim = static_cast<int64_t>(fs[1]);
  out.features.resize(M * fs[1]);
  if (!out.features.empty() &&
      H5Dread(feats.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.features.data()) < 0)
    fail(path, ": cannot read features: ", h5::reason());
  for (size_t i = 0; i < out.features.size(); ++i)
    require(std::isfinite(out.features[i]), path, ": features[", i / fs[1], ", ", i % fs[1], "] (stimulus '",
            out.ids[i / fs[1]], "') is not finite");
}
#endif

}  // namespace

StimulusTable read_stimulus_features(const std::string& path) {
  StimulusTable out;
  out.path = path;
  std::vector<int64_t> lines;  // text tables: the line of each id, for the duplicate error
  if (ends_with(path, ".h5") || ends_with(path, ".hdf5")) {
#ifdef BFM_WITH_HDF5
    read_hdf5(out);
#else
    fail(path, ": reading an HDF5 stimulus table needs HDF5, and this build has none");
#endif
  } else if (ends_with(path, ".npz")) {
#ifdef BFM_WITH_NPZ
    const auto arrays = read_npz(path);
    for (const char* name : {"ids", "features"})
      require(arrays.count(name), path, ": no array '", name, "' (np.savez(FILE, ids=..., features=...))");
    const NpyArray& ids = arrays.at("ids");
    const NpyArray& features = arrays.at("features");
    require(ids.shape.size() == 1, path, ": ids must be 1-D");
    require(features.shape.size() == 2 && features.shape[0] == ids.shape[0], path, ": features must be [",
            ids.shape[0], " ids, dimensions]");
    out.ids = ids.strings();
    out.dim = features.shape[1];
    for (double v : features.numbers()) {
      require(std::isfinite(v), path, ": features[", out.features.size() / static_cast<size_t>(out.dim), ", ",
              out.features.size() % static_cast<size_t>(out.dim), "] is not finite");
      out.features.push_back(static_cast<float>(v));
    }
#else
    fail(path, ": reading an .npz stimulus table needs zlib, and this build has none");
#endif
  } else {
    const TextTable t = read_text_table(path);
    require(t.columns.size() >= 2, path, ":1: ", t.columns.size(), " column(s); expected the stimulus id, then one "
            "column per feature");
    out.dim = static_cast<int64_t>(t.columns.size()) - 1;
    for (size_t r = 0; r < t.rows.size(); ++r) {
      require(!is_missing(t.rows[r][0]), t.where(r), ": the stimulus id (first column) is missing");
      out.ids.push_back(t.rows[r][0]);
      lines.push_back(t.lines[r]);
      for (int c = 1; c <= out.dim; ++c) out.features.push_back(static_cast<float>(t.number(r, c)));
    }
  }
  require(!out.ids.empty(), path, ": no stimuli in the table");
  require(out.dim > 0, path, ": no feature columns");
  for (size_t i = 0; i < out.ids.size(); ++i) {
    const auto [it, added] = out.index.emplace(out.ids[i], static_cast<int32_t>(i));
    if (added) continue;
    if (lines.empty())
      fail(path, ": stimulus id '", out.ids[i], "' is listed twice (rows ", it->second, " and ", i, ")");
    fail(path, ":", lines[i], ": stimulus id '", out.ids[i], "' is listed twice (also on line ",
         lines[size_t(it->second)], ")");
  }
  return out;
}

}  // namespace bfm::io
