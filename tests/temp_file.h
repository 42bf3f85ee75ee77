// temp_file.h — for the storage tests: a temporary file of a known pattern (on the disk: TMPDIR
// or /tmp, removed when it goes out of scope), and a fixture that maps files (skipping where
// io_uring is refused).
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "test_util.h"

namespace umrt_test {

// A temporary file of `bytes` bytes of pattern `seed` (on the disk: TMPDIR or /tmp).
class TempFile {
 public:
  TempFile(size_t bytes, uint64_t seed) : data_(bytes) {
    const char *tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp && *tmp ? tmp : "/tmp") + "/umrt-storage-XXXXXX";
    int fd = mkstemp(path_.data());
    EXPECT_GE(fd, 0) << strerror(errno);
    if (fd < 0) return;
    fill_pattern(data_.data(), bytes, seed);
    size_t off = 0;
    while (off < bytes) {
      ssize_t w = pwrite(fd, data_.data() + off, bytes - off, static_cast<off_t>(off));
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    EXPECT_EQ(off, bytes);
    close(fd);
  }
  ~TempFile() { unlink(path_.c_str()); }
  const char *path() const { return path_.c_str(); }
  const uint8_t *data() const { return data_.data(); }
  std::vector<uint8_t> on_disk() const {
    std::vector<uint8_t> v(data_.size());
    int fd = open(path_.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(pread(fd, v.data(), v.size(), 0), static_cast<ssize_t>(v.size()));
    close(fd);
    return v;
  }

 private:
  std::string path_;
  std::vector<uint8_t> data_;
};

class FileRangeTest : public UmrtTest {
 protected:
  bool ValidateAtEnd() const override { return true; }
  virtual unsigned DefaultFlags() const { return UMRT_MAP_READ; }
  // umrt_map_file; nullptr on failure, with skip_ set when io_uring is not to be had here.
  void *map(const char *path, uint64_t off, size_t size, unsigned flags = 0) {
    void *p = nullptr;
    umrt_status s = umrt_map_file(path, off, size, flags ? flags : DefaultFlags(), &p);
    if (s == UMRT_ERROR_NOT_SUPPORTED) {
      skip_ = std::string("umrt_map_file: ") + last_error();
      return nullptr;
    }
    EXPECT_EQ(s, UMRT_SUCCESS) << last_error();
    return s == UMRT_SUCCESS ? p : nullptr;
  }
  std::string skip_;
};

// Files mapped UMRT_MAP_READ | UMRT_MAP_WRITE unless told otherwise.
class WritableFileRangeTest : public FileRangeTest {
 protected:
  unsigned DefaultFlags() const override { return UMRT_MAP_READ | UMRT_MAP_WRITE; }
};

// The size of the file at path now (-1: none).
inline off_t file_size(const char *path) {
  struct stat st{};
  return stat(path, &st) == 0 ? st.st_size : -1;
}

// Map into var, or skip the test where io_uring is refused.
#define MAP_OR_SKIP(var, ...)                        \
  void *var = map(__VA_ARGS__);                      \
  if (!var && !skip_.empty()) GTEST_SKIP() << skip_; \
  ASSERT_NE(var, nullptr)

}  // namespace umrt_test
