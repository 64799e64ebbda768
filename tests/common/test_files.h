// Shared by the tests: a temporary folder per test, and Debian's /usr/bin/python3 (which has h5py, numpy, nibabel
// and torch) as the independent reader, writer and reference.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace bfm::test {

inline std::filesystem::path make_temp_dir(const std::string& name) {
  auto dir = std::filesystem::path("/tmp") /
             ("bfm-test-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs `code` with /usr/bin/python3 and `args`; returns the exit code, output in `output`.
inline int run_python(const std::filesystem::path& dir, const std::string& code, const std::string& args,
                      std::string& output) {
  const std::string script = (dir / "snippet.py").string(), out = (dir / "snippet.out").string();
  std::ofstream(script) << code;
  const int rc = std::system(("/usr/bin/python3 " + script + " " + args + " > " + out + " 2>&1").c_str());
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  output = ss.str();
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Flips the bits of one byte of a file in place: how the tests corrupt a chunk that a checksum must catch.
inline void flip_byte(const std::string& path, long offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x5a));
}

}  // namespace bfm::test
