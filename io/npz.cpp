// .npy / .npz reading (npz.h).
#include "io/npz.h"

#include <zlib.h>

#include <cctype>
#include <cstring>
#include <fstream>
#include <iterator>

#include "base/error.h"

namespace bfm::io {

namespace {

uint64_t le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(p[i]);
  return v;
}

// The value of 'key' in NumPy's header dict text: the quoted string, the tuple or the word after "'key':".
std::string header_field(const std::string& header, const std::string& key, const std::string& what) {
  const auto at = header.find("'" + key + "'");
  require(at != std::string::npos, what, ": .npy header has no '", key, "': ", header);
  auto v = header.find(':', at) + 1;
  while (v < header.size() && header[v] == ' ') ++v;
  if (header[v] == '\'') return header.substr(v + 1, header.find('\'', v + 1) - v - 1);
  if (header[v] == '(') return header.substr(v + 1, header.find(')', v) - v - 1);
  return header.substr(v, header.find_first_of(",}", v) - v);
}

std::vector<char> inflate_raw(const char* data, size_t size, size_t out_size, const std::string& what) {
  std::vector<char> out(out_size);
  z_stream z{};
  require(inflateInit2(&z, -MAX_WBITS) == Z_OK, what, ": cannot start zlib");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
  z.avail_in = static_cast<uInt>(size);
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out_size);
  const int rc = inflate(&z, Z_FINISH);
  inflateEnd(&z);
  require(rc == Z_STREAM_END && z.total_out == out_size, what, ": damaged deflate data (zlib ", rc, ")");
  return out;
}

}  // namespace

int64_t NpyArray::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<double> NpyArray::numbers() const {
  require(kind == 'i' || kind == 'u' || kind == 'f', "not an array of numbers");
  std::vector<double> out(static_cast<size_t>(size()));
  for (size_t i = 0; i < out.size(); ++i) {
    const char* p = bytes.data() + i * static_cast<size_t>(itemsize);
    if (kind == 'f' && itemsize == 4) {
      float f;
      std::memcpy(&f, p, 4);
      out[i] = f;
    } else if (kind == 'f') {
      std::memcpy(&out[i], p, 8);
    } else {
      const uint64_t raw = le(p, static_cast<int>(itemsize));
      const int shift = 64 - 8 * static_cast<int>(itemsize);
      out[i] = kind == 'u' ? static_cast<double>(raw)
                           : static_cast<double>(static_cast<int64_t>(raw << shift) >> shift);  // sign-extend
    }
  }
  return out;
}

std::vector<std::string> NpyArray::strings() const {
  std::vector<std::string> out;
  if (kind == 'i' || kind == 'u') {
    for (double v : numbers()) out.push_back(std::to_string(static_cast<int64_t>(v)));
    return out;
  }
  require(kind == 'S' || kind == 'U', "not an array of strings");
  for (int64_t i = 0; i < size(); ++i) {
    const char* p = bytes.data() + i * itemsize;
    std::string s;
    if (kind == 'S') {
      s.assign(p, static_cast<size_t>(itemsize));
      s.resize(std::strlen(s.c_str()));
    } else {
      for (int64_t c = 0; c < itemsize / 4; ++c) {  // UTF-32 little-endian code points -> UTF-8
        const auto cp = static_cast<uint32_t>(le(p + 4 * c, 4));
        if (cp == 0) break;
        if (cp < 0x80) {
          s += static_cast<char>(cp);
        } else if (cp < 0x800) {
          s += static_cast<char>(0xC0 | cp >> 6), s += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
          s += static_cast<char>(0xE0 | cp >> 12), s += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
          s += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
          s += static_cast<char>(0xF0 | cp >> 18), s += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
          s += static_cast<char>(0x80 | (cp >> 6 & 0x3F)), s += static_cast<char>(0x80 | (cp & 0x3F));
        }
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

NpyArray parse_npy(const std::vector<char>& file, const std::string& what) {
  require(file.size() >= 10 && std::memcmp(file.data(), "\x93NUMPY", 6) == 0, what, ": not a .npy array");
  const int major = static_cast<unsigned char>(file[6]);
  const size_t len_bytes = major == 1 ? 2 : 4, start = 8 + len_bytes;
  require(file.size() >= start, what, ": truncated .npy header");
  const size_t header_len = le(file.data() + 8, static_cast<int>(len_bytes));
  require(file.size() >= start + header_len, what, ": truncated .npy header");
  const std::string header(file.data() + start, header_len);
  NpyArray a;
  const std::string descr = header_field(header, "descr", what);
  require(descr.size() >= 2 && (descr[0] == '<' || descr[0] == '|' || descr[0] == '='), what, ": dtype '", descr,
          "' is not read (little-endian numbers and fixed-width strings are)");
  a.kind = descr[1];
  a.itemsize = descr.size() > 2 && std::isdigit(static_cast<unsigned char>(descr[2])) ? std::stoll(descr.substr(2)) : 0;
  if (a.kind == 'U') a.itemsize *= 4;
  const bool number = (a.kind == 'i' || a.kind == 'u') ? a.itemsize >= 1 && a.itemsize <= 8
                      : a.kind == 'f'                  ? a.itemsize == 4 || a.itemsize == 8
                                                       : false;
  require(number || ((a.kind == 'S' || a.kind == 'U') && a.itemsize > 0), what, ": dtype '", descr,
          "' is not read (numbers, S or U strings; an object array is a pickle: save the ids with dtype=str)");
  require(header_field(header, "fortran_order", what) == "False", what, ": Fortran-ordered arrays are not read");
  const std::string shape = header_field(header, "shape", what);
  size_t at = 0;
  while (at < shape.size()) {
    const size_t comma = shape.find(',', at);
    const std::string d = shape.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    if (d.find_first_of("0123456789") != std::string::npos) a.shape.push_back(std::stoll(d));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  const size_t bytes = static_cast<size_t>(a.size() * a.itemsize);
  require(file.size() - start - header_len >= bytes, what, ": truncated: ", file.size() - start - header_len,
          " bytes of data for ", bytes);
  a.bytes.assign(file.begin() + static_cast<std::ptrdiff_t>(start + header_len),
                 file.begin() + static_cast<std::ptrdiff_t>(start + header_len + bytes));
  return a;
}

std::map<std::string, NpyArray> read_npz(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(in.good(), path, ": cannot open");
  const std::vector<char> z((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The end of central directory record: the last "PK\5\6" in the final 64 KB + 22 bytes.
  size_t eocd = std::string::npos;
  const size_t lowest = z.size() > 65557 ? z.size() - 65557 : 0;
  for (size_t i = z.size() >= 22 ? z.size() - 21 : 0; i-- > lowest;)
    if (le(&z[i], 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  require(eocd != std::string::npos, path, ": not a zip (.npz) file");
  uint64_t entries = le(&z[eocd + 10], 2), cd = le(&z[eocd + 16], 4);
  if ((entries == 0xFFFF || cd == 0xFFFFFFFF) && eocd >= 20 && le(&z[eocd - 20], 4) == 0x07064b50) {
    const uint64_t z64 = le(&z[eocd - 12], 8);  // zip64 end of central directory record
    require(z64 + 56 <= z.size() && le(&z[z64], 4) == 0x06064b50, path, ": damaged zip64 directory");
    entries = le(&z[z64 + 32], 8);
    cd = le(&z[z64 + 48], 8);
  }
  std::map<std::string, NpyArray> out;
  for (uint64_t e = 0, at = cd; e < entries; ++e) {
    require(at + 46 <= z.size() && le(&z[at], 4) == 0x02014b50, path, ": damaged zip directory");
    const uint64_t method = le(&z[at + 10], 2);
    uint64_t packed = le(&z[at + 20], 4), size = le(&z[at + 24], 4), local = le(&z[at + 42], 4);
    const uint64_t name_len = le(&z[at + 28], 2), extra_len = le(&z[at + 30], 2), comment = le(&z[at + 32], 2);
    const std::string name(&z[at + 46], name_len);
    // Zip64 extra field: the 8-byte values of those that are 0xFFFFFFFF above, in this order.
    for (uint64_t x = at + 46 + name_len; x + 4 <= at + 46 + name_len + extra_len;) {
      const uint64_t id = le(&z[x], 2), n = le(&z[x + 2], 2);
      require(x + 4 + n <= z.size(), path, ": damaged zip directory");
      if (id == 1) {
        uint64_t f = x + 4;
        if (size == 0xFFFFFFFF) size = le(&z[f], 8), f += 8;
        if (packed == 0xFFFFFFFF) packed = le(&z[f], 8), f += 8;
        if (local == 0xFFFFFFFF) local = le(&z[f], 8);
      }
      x += 4 + n;
    }
    at += 46 + name_len + extra_len + comment;
    const std::string what = path + ": " + name;
    require(local + 30 <= z.size() && le(&z[local], 4) == 0x04034b50, what, ": damaged zip member");
    const uint64_t data = local + 30 + le(&z[local + 26], 2) + le(&z[local + 28], 2);
    require(data + packed <= z.size(), what, ": truncated");
    std::vector<char> bytes;
    if (method == 0) bytes.assign(z.begin() + static_cast<std::ptrdiff_t>(data),
                                  z.begin() + static_cast<std::ptrdiff_t>(data + packed));
    else if (method == 8) bytes = inflate_raw(&z[data], packed, size, what);
    else fail(what, ": zip compression method ", method, " is not read (stored or deflate are)");
    std::string key = name.ends_with(".npy") ? name.substr(0, name.size() - 4) : name;
    out.emplace(key, parse_npy(bytes, what));
  }
  return out;
}

}  // namespace bfm::io
