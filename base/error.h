// The one error type of bfm. Header-only and dependency-free, so every layer (io/ and kernels/ included) may throw
// it. The message names what went wrong where: the file, tensor, dataset, rank or value, e.g.
//   ckpt/model.safetensors: tensor 'blocks.0.attn.qkv.weight' has shape [96, 32], config needs [96, 33]
// launch/ catches it at the top and prints it as one line, exiting non-zero.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bfm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates its arguments with operator<< into one message and throws bfm::Error.
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  throw Error(os.str());
}

// fail(...) unless cond holds.
template <class... Parts>
void require(bool cond, Parts&&... parts) {
  if (!cond) fail(std::forward<Parts>(parts)...);
}

// "[2, 12, 5]": how errors print a tensor's or dataset's shape.
template <class Int>
std::string shape_string(const std::vector<Int>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

}  // namespace bfm
