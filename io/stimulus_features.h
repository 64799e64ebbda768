// A study's stimulus feature table (bfm convert --stim-features FILE): one row per stimulus, its id (the value the
// events' stimulus column holds, e.g. stim_file's "clips/cat.mp4") and S numbers (e.g. a CLIP vector).
//  - .tsv / .csv (any other name is read as TSV): a header line, then `id  f1 ... fS` per line;
//  - .h5 / .hdf5: datasets `ids` [M] (strings, fixed or variable length, or integers) and `features` [M, S] (any
//    real or integer type);
//  - .npz (np.savez or np.savez_compressed): arrays `ids` [M] (str, bytes or integers) and `features` [M, S]
//    (io/npz.h).
// Errors are one line naming the file and, for a text table, the line: a row with another number of cells than the
// header, a cell that is not a number, an id listed twice, no feature column.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bfm::io {

struct StimulusTable {
  std::string path;
  std::vector<std::string> ids;       // [M], in file order
  int64_t dim = 0;                    // S
  std::vector<float> features;        // [M, S]
  std::map<std::string, int32_t> index;  // id -> row
};

StimulusTable read_stimulus_features(const std::string& path);

}  // namespace bfm::io
