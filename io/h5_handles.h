// Small RAII pieces for HDF5's C API used by the shard reader and writer: an identifier closed on scope exit,
// HDF5's automatic error printing silenced for a scope, and the innermost reason from HDF5's error stack (so that a
// failure becomes one bfm::Error naming the file and dataset). Internal to io/; needs HDF5.
#pragma once

#ifdef BFM_WITH_HDF5

#include <hdf5.h>

#include <string>

namespace bfm::io::h5 {

// Silences HDF5's automatic error printing for one scope and restores whatever was installed before.
class Quiet {
 public:
  Quiet() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &client_data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~Quiet() { H5Eset_auto2(H5E_DEFAULT, func_, client_data_); }
  Quiet(const Quiet&) = delete;
  Quiet& operator=(const Quiet&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* client_data_ = nullptr;
};

// The most specific message on HDF5's error stack (which then is cleared).
inline std::string reason() {
  std::string text;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* err, void* out) -> herr_t {
        if (n == 0 && err->desc) *static_cast<std::string*>(out) = err->desc;
        return 0;
      },
      &text);
  H5Eclear2(H5E_DEFAULT);
  if (text.empty()) return "unknown HDF5 error";
  // A failed read or write of the file driver spells out its call, with the system's reason inside:
  // "file write failed: time = ..., errno = 28, error message = 'No space left on device', ...". One line with the
  // reason is what a user needs: "file write failed: No space left on device".
  const std::string key = "error message = '";
  const size_t at = text.find(key), end = at == std::string::npos ? at : text.find('\'', at + key.size());
  if (end != std::string::npos) {
    const size_t colon = text.find(':');
    return text.substr(0, colon) + ": " + text.substr(at + key.size(), end - at - key.size());
  }
  for (char& c : text)
    if (c == '\n') c = ' ';
  return text;
}

// An HDF5 identifier closed on scope exit.
class Id {
 public:
  Id() = default;
  Id(hid_t id, herr_t (*closer)(hid_t)) : id_(id), close_(closer) {}
  ~Id() { reset(); }
  Id(Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      close_ = o.close_;
      o.id_ = -1;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  // Closes now and reports whether HDF5 could (a file's close flushes it).
  bool close() {
    const bool good = id_ < 0 || !close_ || close_(id_) >= 0;
    id_ = -1;
    return good;
  }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// IEEE 754 binary16 (little-endian) as an HDF5 type: what numpy's float16 is in a file h5py writes.
inline Id half_type() {
  Id t(H5Tcopy(H5T_IEEE_F32LE), H5Tclose);
  H5Tset_fields(t.get(), 15, 10, 5, 0, 10);
  H5Tset_size(t.get(), 2);
  H5Tset_ebias(t.get(), 15);
  return t;
}

}  // namespace bfm::io::h5

#endif  // BFM_WITH_HDF5
