// Reader and writer of float32 safetensors files (format in safetensors.h).
//
// The reader trusts nothing in the header: every tensor's byte range is checked against its shape, the ranges must
// tile the data section exactly (sorted by offset: no overlap, no gap, no trailing bytes), and the data section must
// be as long as the header says. These are the checks of the reference implementation (huggingface/safetensors
// `validate`), so a file we accept loads in PyTorch and one PyTorch writes loads here.
//
// The writer pads the JSON header with spaces to a multiple of 8 bytes (as the reference does, so the data section
// is aligned), writes `path.tmp`, fsyncs it, renames it over `path` and fsyncs the folder.
#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "base/error.h"

namespace bfm::runtime {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so is this host");

namespace {

// The reference rejects headers above 100 MB; a checkpoint of a few hundred tensors needs some kilobytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Number of values of `shape`, or fail() naming the tensor when a dimension is negative or the count overflows.
uint64_t value_count(const std::string& path, const std::string& name, const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    require(d >= 0, path, ": tensor '", name, "' has a negative dimension in shape ", shape_string(shape));
    const auto ud = static_cast<uint64_t>(d);
    require(ud == 0 || n <= std::numeric_limits<uint64_t>::max() / sizeof(float) / ud, path, ": tensor '", name,
            "' has shape ", shape_string(shape), ", too large to address");
    n *= ud;
  }
  return n;
}

// An open file descriptor, closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error that close() may be the first to see (delayed write-back on some filesystems).
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// Reads exactly n bytes; returns how many were read before end of file (n unless the file is short).
size_t read_fully(const std::string& path, int fd, char* dst, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, dst + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    require(r >= 0, path, ": read failed: ", std::strerror(errno));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

void write_fully(const std::string& path, int fd, const char* src, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, src, n);
    if (w < 0 && errno == EINTR) continue;
    require(w > 0, path, ": write failed: ", std::strerror(w < 0 ? errno : EIO));
    src += w;
    n -= static_cast<size_t>(w);
  }
}

// A non-negative integer from the header (JSON numbers may be negative or fractional).
uint64_t header_uint(const std::string& path, const std::string& name, const char* field, const nlohmann::json& v) {
  require(v.is_number_unsigned(), path, ": tensor '", name, "': ", field, " holds ", v.dump(),
          ", not a non-negative integer");
  return v.get<uint64_t>();
}

struct HeaderEntry {
  std::string name;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range within the data section
};

HeaderEntry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& info) {
  require(info.is_object(), path, ": tensor '", name, "': header entry is ", info.dump(), ", not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    require(info.contains(field), path, ": tensor '", name, "': header entry has no '", field, "'");
  const nlohmann::json& dtype = info["dtype"];
  require(dtype.is_string(), path, ": tensor '", name, "': dtype ", dtype.dump(), " is not a string");
  require(dtype.get<std::string>() == "F32", path, ": tensor '", name, "' has dtype ", dtype.get<std::string>(),
          "; bfm reads F32 only");

  HeaderEntry e;
  e.name = name;
  const nlohmann::json& shape = info["shape"];
  require(shape.is_array(), path, ": tensor '", name, "': shape ", shape.dump(), " is not a list");
  for (const nlohmann::json& d : shape) {
    const uint64_t ud = header_uint(path, name, "shape", d);
    require(ud <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), path, ": tensor '", name,
            "': dimension ", ud, " is too large");
    e.shape.push_back(static_cast<int64_t>(ud));
  }
  const nlohmann::json& offsets = info["data_offsets"];
  require(offsets.is_array() && offsets.size() == 2, path, ": tensor '", name, "': data_offsets ", offsets.dump(),
          " is not a pair [begin, end]");
  e.begin = header_uint(path, name, "data_offsets", offsets[0]);
  e.end = header_uint(path, name, "data_offsets", offsets[1]);
  require(e.begin <= e.end, path, ": tensor '", name, "': data_offsets [", e.begin, ", ", e.end,
          "] end before they begin");
  const uint64_t bytes = value_count(path, name, e.shape) * sizeof(float);
  require(e.end - e.begin == bytes, path, ": tensor '", name, "' has shape ", shape_string(e.shape), " (", bytes,
          " bytes of F32) but data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin, " bytes");
  return e;
}

}  // namespace

SafetensorsContents read_safetensors(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  require(fd.get() >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  require(::fstat(fd.get(), &st) == 0, path, ": cannot stat: ", std::strerror(errno));
  require(S_ISREG(st.st_mode), path, ": not a regular file");
  const auto file_bytes = static_cast<uint64_t>(st.st_size);

  char len_bytes[8];
  require(file_bytes >= 8 && read_fully(path, fd.get(), len_bytes, 8) == 8, path, ": truncated: file has ",
          file_bytes, " bytes, fewer than the 8-byte header length");
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, len_bytes, 8);
  require(header_bytes <= file_bytes - 8, path, ": truncated: header length says ", header_bytes,
          " bytes of JSON header, file has ", file_bytes - 8, " bytes after the length");
  require(header_bytes <= kMaxHeaderBytes, path, ": header length ", header_bytes, " exceeds the limit of ",
          kMaxHeaderBytes, " bytes");

  std::string header_text(header_bytes, '\0');
  require(read_fully(path, fd.get(), header_text.data(), header_bytes) == header_bytes, path,
          ": truncated while reading the header");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_text);
  } catch (const nlohmann::json::exception& ex) {
    fail(path, ": header is not valid JSON: ", ex.what());
  }
  require(header.is_object(), path, ": header is ", header.type_name(), ", not a JSON object");

  SafetensorsContents out;
  std::vector<HeaderEntry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      require(value.is_object(), path, ": __metadata__ is ", value.type_name(), ", not an object of strings");
      for (const auto& [mkey, mval] : value.items()) {
        require(mval.is_string(), path, ": __metadata__ '", mkey, "' is ", mval.dump(), ", not a string");
        out.metadata[mkey] = mval.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, key, value));
  }

  // Sorted by offset, the byte ranges must tile [0, data size) exactly. Zero-size tensors sort first at their offset.
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  uint64_t covered = 0;
  const HeaderEntry* prev = nullptr;
  for (const HeaderEntry& e : entries) {
    require(e.begin >= covered, path, ": tensor '", e.name, "' (bytes ", e.begin, "..", e.end, ") overlaps tensor '",
            prev ? prev->name : "", "' (bytes ", prev ? prev->begin : 0, "..", covered, ")");
    require(e.begin == covered, path, ": gap in the data: tensor '", e.name, "' begins at byte ", e.begin,
            " but the tensors before it end at byte ", covered);
    covered = e.end;
    prev = &e;
  }
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;
  require(covered <= data_bytes, path, ": truncated: header says ", covered, " bytes of data, file has ", data_bytes);
  require(covered == data_bytes, path, ": ", data_bytes - covered, " bytes after the last tensor (header says ",
          covered, " bytes of data, file has ", data_bytes, ")");

  // Offsets ascend and tile the data section, so each tensor is read straight into its own buffer in file order.
  for (const HeaderEntry& e : entries) {
    Tensor t;
    t.shape = e.shape;
    t.data.resize((e.end - e.begin) / sizeof(float));
    const size_t want = e.end - e.begin;
    require(read_fully(path, fd.get(), reinterpret_cast<char*>(t.data.data()), want) == want, path,
            ": truncated while reading tensor '", e.name, "' (file shrank while being read?)");
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

namespace {
// The header as written: insertion order kept so that offsets ascend in the caller's order, __metadata__ on top,
// padded with spaces to a multiple of 8 bytes.
std::string encode_header(const std::string& path, const std::vector<TensorRef>& tensors,
                          const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorRef& t : tensors) {
    require(!t.name.empty() && t.name != "__metadata__", path, ": cannot write a tensor named '", t.name, "'");
    require(!header.contains(t.name), path, ": tensor '", t.name, "' is given twice");
    const uint64_t bytes = value_count(path, t.name, t.shape) * sizeof(float);
    require(bytes == 0 || t.data != nullptr, path, ": tensor '", t.name, "' has shape ", shape_string(t.shape),
            " but no data");
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& ex) {  // e.g. a name or metadata value that is not UTF-8
    fail(path, ": cannot encode the header: ", ex.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}
}  // namespace

std::string encode_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  const std::string header = encode_header(path, tensors, metadata);
  const uint64_t header_bytes = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &header_bytes, 8);
  out += header;
  for (const TensorRef& t : tensors) {
    const uint64_t bytes = value_count(path, t.name, t.shape) * sizeof(float);
    if (bytes) out.append(reinterpret_cast<const char*>(t.data), bytes);
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header_text = encode_header(path, tensors, metadata);
  const uint64_t header_bytes = header_text.size();

  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  require(fd.get() >= 0, path, ": cannot create ", tmp, ": ", std::strerror(errno));
  try {
    char len_bytes[8];
    std::memcpy(len_bytes, &header_bytes, 8);
    write_fully(tmp, fd.get(), len_bytes, 8);
    write_fully(tmp, fd.get(), header_text.data(), header_text.size());
    for (const TensorRef& t : tensors) {
      const uint64_t bytes = value_count(path, t.name, t.shape) * sizeof(float);
      if (bytes) write_fully(tmp, fd.get(), reinterpret_cast<const char*>(t.data), bytes);
    }
    require(::fsync(fd.get()) == 0, tmp, ": fsync failed: ", std::strerror(errno));
    require(fd.close() == 0, tmp, ": close failed: ", std::strerror(errno));
    require(::rename(tmp.c_str(), path.c_str()) == 0, path, ": cannot rename ", tmp, " to it: ",
            std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable. Failing here leaves a whole file under `path`, so it is not an error.
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) ::fsync(dir_fd.get());
}

}  // namespace bfm::runtime
