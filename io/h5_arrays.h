// Plain named arrays in an HDF5 file: what `bfm forward` reads (x, mask, stim) and writes (encoder_out, losses...).
// Serial HDF5 (one process); the sharded corpus format has its own reader and writer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bfm::io {

template <class T>
struct Array {
  std::vector<int64_t> shape;  // [] for a scalar dataset
  std::vector<T> data;         // row-major
};

class H5ArrayReader {
 public:
  // Throws bfm::Error naming the path when it is missing or not an HDF5 file.
  explicit H5ArrayReader(const std::string& path);
  ~H5ArrayReader();
  H5ArrayReader(const H5ArrayReader&) = delete;
  H5ArrayReader& operator=(const H5ArrayReader&) = delete;

  bool has(const std::string& dataset) const;
  // Reads a dataset of any floating-point type as float32, or of any integer type as uint8 (values 0..255 checked).
  // Errors name the file and dataset: missing dataset, a non-numeric type, a value out of range.
  Array<float> read_f32(const std::string& dataset) const;
  Array<uint8_t> read_u8(const std::string& dataset) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int64_t file_;  // hid_t
};

class H5ArrayWriter {
 public:
  // Creates `path + ".tmp"`; commit() closes it and renames it to `path`. Destroyed without commit(), the temporary
  // file is removed, so a failed run leaves no half-written output that looks whole.
  explicit H5ArrayWriter(const std::string& path);
  ~H5ArrayWriter();
  H5ArrayWriter(const H5ArrayWriter&) = delete;
  H5ArrayWriter& operator=(const H5ArrayWriter&) = delete;

  void write_f32(const std::string& dataset, const std::vector<int64_t>& shape, const float* data);
  void write_f64(const std::string& dataset, const std::vector<int64_t>& shape, const double* data);
  void write_i64(const std::string& dataset, const std::vector<int64_t>& shape, const int64_t* data);
  void write_scalar_f32(const std::string& dataset, float value);
  // A 1-D dataset of strings: fixed-length, null-padded UTF-8 (as the shards' strings; h5py reads them as bytes).
  void write_strings(const std::string& dataset, const std::vector<std::string>& values);
  void commit();

 private:
  // Creates `dataset` (and the groups on its path) of `file_type` and writes `data` of `mem_type` into it.
  void write(const std::string& dataset, const std::vector<int64_t>& shape, int64_t file_type, int64_t mem_type,
             const void* data);

  std::string path_;
  int64_t file_;  // hid_t, -1 once closed
};

}  // namespace bfm::io
