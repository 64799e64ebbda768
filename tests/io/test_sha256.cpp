// io/sha256.h against published digests (FIPS 180-4's examples, NIST's million 'a') and against Python's hashlib on
// messages whose lengths straddle the 64-byte block and the padding's 56-byte boundary.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/error.h"
#include "io/sha256.h"

namespace bfm::io {
namespace {

std::string pattern(size_t n) {  // bytes (i * 7 + 3) mod 256, as the hashlib digests below were made
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + 3) % 256);
  return s;
}

TEST(Sha256, PublishedDigests) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, BlockBoundariesAgreeWithHashlib) {
  EXPECT_EQ(sha256_hex(pattern(55)), "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b");
  EXPECT_EQ(sha256_hex(pattern(56)), "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27");
  EXPECT_EQ(sha256_hex(pattern(63)), "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055");
  EXPECT_EQ(sha256_hex(pattern(64)), "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241");
  EXPECT_EQ(sha256_hex(pattern(65)), "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e");
  EXPECT_EQ(sha256_hex(pattern(1000)), "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371");
}

TEST(Sha256, FileDigestEqualsTheBytesDigestAndAMissingFileIsNamed) {
  const auto path = std::filesystem::temp_directory_path() / "bfm_sha256_test.bin";
  const std::string bytes = pattern(3 * (1 << 20) + 17);  // more than the reader's 1 MiB buffer
  std::ofstream(path, std::ios::binary) << bytes;
  EXPECT_EQ(file_sha256(path.string()), sha256_hex(bytes));
  std::filesystem::remove(path);
  try {
    file_sha256(path.string());
    FAIL() << "no error for a missing file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bfm::io
