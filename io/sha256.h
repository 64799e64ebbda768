// SHA-256 (FIPS 180-4) of bytes and of files: the provenance of a corpus names its atlas file by its digest, so that
// a checkpoint and the data given to it can be checked for the same atlas whatever the file is called. Written out
// here (about sixty lines) rather than taken from a crypto library, so that every build of bfm has it, the GPU
// machine's included; it is not used for security.
#pragma once

#include <string>
#include <string_view>

namespace bfm::io {

// The digest of `bytes` as 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

// The digest of a file's bytes; throws bfm::Error naming the file when it cannot be read.
std::string file_sha256(const std::string& path);

}  // namespace bfm::io
