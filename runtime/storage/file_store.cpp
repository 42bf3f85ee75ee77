// storage/file_store.cpp — file-backed ranges' pages: the checks of umrt_map_file and the
// batched reads of runs of pages (one ring submission per run, O_DIRECT where the file system
// takes it).
#include "file_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "../common.h"
#include "../range.h"
#include "ring.h"

namespace umrt::rt {

int open_file_range(const char *path, uint64_t offset, uint64_t *size, std::string *why) {
  struct stat st{};
  if (stat(path, &st) != 0) {
    int err = errno;
    *why = strerror(err);
    return -err;
  }
  if (!S_ISREG(st.st_mode)) {
    *why = S_ISDIR(st.st_mode) ? "a directory, not a regular file" : "not a regular file";
    return -EINVAL;
  }
  if (offset % kPageSize) {
    *why = "offset " + std::to_string(offset) + " is not a multiple of 4096";
    return -EINVAL;
  }
  const uint64_t fsize = static_cast<uint64_t>(st.st_size);
  if (offset >= fsize) {
    *why = "offset " + std::to_string(offset) + " is at or past the end of the file (" + std::to_string(fsize) + " bytes)";
    return -EINVAL;
  }
  if (*size == 0) *size = fsize - offset;
  if (*size > fsize - offset) {
    *why = "the span of " + std::to_string(*size) + " bytes at " + std::to_string(offset) +
           " goes past the end of the file (" + std::to_string(fsize) + " bytes)";
    return -EINVAL;
  }
  bool direct = false;
  int fd = open_for_io(path, false, &direct);
  if (fd < 0) *why = strerror(-fd);
  else log(Level::info, "umrt_map_file %s: %s I/O", path, direct ? "O_DIRECT" : "buffered");
  return fd;
}

char *file_staging() {
  struct Free {
    void operator()(char *p) const { std::free(p); }
  };
  thread_local std::unique_ptr<char, Free> buf;
  if (!buf) {
    void *p = nullptr;
    if (posix_memalign(&p, kPageSize, kBlockSize) != 0) return nullptr;
    buf.reset(static_cast<char *>(p));
  }
  return buf.get();
}

int read_file_pages(const Range &r, size_t page, size_t n, char *buf, uint64_t *bytes, size_t *ok) {
  *bytes = 0;
  *ok = 0;
  const uint64_t at = static_cast<uint64_t>(page) * kPageSize;
  const uint64_t want = at >= r.size ? 0 : std::min<uint64_t>(n * kPageSize, r.size - at);
  int err = 0;
  Ring *ring = Ring::mine(&err);
  if (!ring) return err;
  IoOp op;
  op.fd = r.file_fd;
  op.buf = buf;
  op.len = n * kPageSize;  // whole pages (O_DIRECT); the file's end stops it short
  op.off = r.file_off + at;
  int rc = ring->run(&op, 1);
  *bytes = std::min<uint64_t>(op.done, want);
  if (rc && rc != -ENODATA) return rc;
  const uint64_t got = *bytes;
  std::memset(buf + got, 0, n * kPageSize - got);
  *ok = static_cast<size_t>((got + kPageSize - 1) / kPageSize);
  if (got < want) return -ENODATA;  // the file is shorter than when it was mapped
  *ok = n;
  return 0;
}

}  // namespace umrt::rt
