// NumPy's .npy arrays and .npz archives (np.save, np.savez, np.savez_compressed), read without Python: enough for a
// table of numbers and strings handed over by a user (bfm convert --stim-features FEATURES.npz). An .npz is a zip
// file (each array a member NAME.npy, stored or deflated, zip64 headers as NumPy writes them); an .npy is a magic
// string, a header (a Python dict literal: descr, fortran_order, shape) and the array's bytes.
//
// Kinds read: little-endian or single-byte integers and floats (i1..i8, u1..u8, f4, f8) and fixed-width strings
// (S: bytes, U: UTF-32 -> UTF-8). Object arrays (pickles), big-endian data, Fortran order and structured dtypes are
// errors naming the file and member.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bfm::io {

struct NpyArray {
  std::vector<int64_t> shape;
  char kind = 0;        // 'i', 'u', 'f', 'S' or 'U' (numpy's dtype.kind)
  int64_t itemsize = 0; // bytes per element (for U: 4 x the character count)
  std::vector<char> bytes;  // C order

  int64_t size() const;                     // elements
  std::vector<double> numbers() const;      // every element as a number (i, u, f); throws for strings
  std::vector<std::string> strings() const; // every element as UTF-8 (S, U; integers as their decimal digits)
};

// An .npy file's bytes as an array; `what` names it in errors ("FILE" or "FILE: member").
NpyArray parse_npy(const std::vector<char>& file, const std::string& what);
// Every member of an .npz archive, by name without ".npy". Throws bfm::Error naming the file.
std::map<std::string, NpyArray> read_npz(const std::string& path);

}  // namespace bfm::io
