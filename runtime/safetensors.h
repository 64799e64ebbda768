// The safetensors file format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the raw
// row-major tensor bytes. bfm reads and writes float32 ("F32") tensors only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bfm::runtime {

struct Tensor {
  std::vector<int64_t> shape;  // [] for a scalar
  std::vector<float> data;     // row-major, product(shape) values
};

struct TensorRef {  // a tensor to be written, not owned
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
};

struct SafetensorsContents {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Reads and validates the whole file. Throws bfm::Error naming the file (and the tensor where one is at fault) for:
// a missing or unreadable file, a file shorter than its header says (truncated), a header that is not valid JSON,
// a dtype other than F32, offsets that overlap, leave gaps, or run past the end, a shape whose size disagrees with
// its byte range, and NaN-free is NOT checked (callers decide).
SafetensorsContents read_safetensors(const std::string& path);

// Writes the tensors in the given order (offsets ascending), under `path + ".tmp"` first, then renames it to `path`
// once whole and flushed, so an interrupted write never leaves a file that looks complete.
void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The same file's bytes in memory (small files that travel inside another folder's atomic write); `path` names the
// file in errors.
std::string encode_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace bfm::runtime
