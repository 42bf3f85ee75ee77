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

#include "../batch.h"
#include "../common.h"
#include "../range.h"
#include "ring.h"

namespace umrt::rt {

namespace {
// The same open file again (not by its path: that may name another file by now), read-write and
// buffered (O_DIRECT is a property of the open file, not of the inode). -1 (errno) on failure.
int reopen_buffered(int fd) {
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  return open(self.c_str(), O_RDWR | O_CLOEXEC);
}
}  // namespace

int open_file_range(const char *path, uint64_t offset, uint64_t *size, bool writable, int *tail_fd, std::string *why) {
  *tail_fd = -1;
  // Opened first, non-blocking (a FIFO must not block the open), then the open file is the one
  // checked and used (no window for a swap between a stat() and the open()).
  int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    if (writable && (err == EACCES || err == EROFS || err == ETXTBSY || err == EPERM)) {
      // Readable perhaps, but not to be written: say which, for UMRT_MAP_WRITE.
      *why = std::string("UMRT_MAP_WRITE: the file cannot be opened for writing (") + strerror(err) +
             (err == EROFS ? "; a read-only file system" : "") + ")";
    } else if (writable && err == EISDIR) {
      *why = "a directory, not a regular file";
      err = EINVAL;
    } else {
      *why = strerror(err);
    }
    return -err;
  }
  auto refuse = [&](std::string w) {
    close(fd);
    *why = std::move(w);
    return -EINVAL;
  };
  struct stat st{};
  if (fstat(fd, &st) != 0) return refuse(strerror(errno));
  if (!S_ISREG(st.st_mode)) return refuse(S_ISDIR(st.st_mode) ? "a directory, not a regular file" : "not a regular file");
  if (offset % kPageSize) return refuse("offset " + std::to_string(offset) + " is not a multiple of 4096");
  const uint64_t fsize = static_cast<uint64_t>(st.st_size);
  if (offset >= fsize)
    return refuse("offset " + std::to_string(offset) + " is at or past the end of the file (" + std::to_string(fsize) +
                  " bytes)");
  if (*size == 0) *size = fsize - offset;
  if (*size > fsize - offset)
    return refuse("the span of " + std::to_string(*size) + " bytes at " + std::to_string(offset) +
                  " goes past the end of the file (" + std::to_string(fsize) + " bytes)");
  // Blocking again (io_uring would answer EAGAIN for a non-blocking file instead of waiting).
  const int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  const bool direct = direct_if_taken(fd);
  log(Level::info, "umrt_map_file %s: %s I/O%s", path, direct ? "O_DIRECT" : "buffered", writable ? ", read-write" : "");
  if (writable && direct && *size % kPageSize) {
    *tail_fd = reopen_buffered(fd);
    if (*tail_fd < 0) {
      const int err = errno;
      close(fd);
      *why = std::string("a second descriptor for the last page: ") + strerror(err);
      return -err;
    }
  }
  return fd;
}

int read_file_pages(const Range &r, size_t page, size_t n, char *buf, uint64_t *bytes, size_t *ok) {
  *bytes = 0;
  *ok = 0;
  const uint64_t at = static_cast<uint64_t>(page) * kPageSize;
  const uint64_t want = at >= r.size ? 0 : std::min<uint64_t>(n * kPageSize, r.size - at);
  int err = 0;
  Ring *ring = storage_ring(&err);
  if (!ring) return err;
  // A long run goes as a few ops of one submission (the disk works on them together: measured,
  // docs/design.md "Storage tier"), whole pages each (O_DIRECT); the file's end stops one short.
  constexpr size_t kSplitPages = 128;  // 512 KiB
  IoOp ops[kBlockPages / kSplitPages + 1];
  size_t nops = 0;
  for (size_t i = 0; i < n; i += kSplitPages) {
    IoOp &op = ops[nops++];
    op.fd = r.file_fd;
    op.buf = buf + i * kPageSize;
    op.len = std::min(kSplitPages, n - i) * kPageSize;
    op.off = r.file_off + at + i * kPageSize;
  }
  int rc = ring->run(ops, nops);
  // What was read is the prefix up to the first op that came back short.
  uint64_t done = 0;
  for (size_t k = 0; k < nops; ++k) {
    done += ops[k].done;
    if (ops[k].done < ops[k].len) break;
  }
  *bytes = std::min<uint64_t>(done, want);
  if (rc && rc != -ENODATA) {
    for (size_t k = 0; k < nops; ++k)
      if (ops[k].status && ops[k].status != -ENODATA) return ops[k].status;
    return rc;
  }
  const uint64_t got = *bytes;
  std::memset(buf + got, 0, n * kPageSize - got);
  *ok = static_cast<size_t>((got + kPageSize - 1) / kPageSize);
  if (got < want) return -ENODATA;  // the file is shorter than when it was mapped
  *ok = n;
  return 0;
}

namespace {
// A descriptor that writes bytes off page boundaries: the range's buffered one, else (file_fd
// buffered already) file_fd, else one opened for the purpose (a truncation ended the file off a
// page in an O_DIRECT range), kept with the range.
int tail_fd(const Range &r) {
  if (r.file_fd_tail >= 0) return r.file_fd_tail;
  if (const int late = r.tail_fd_late.load(std::memory_order_acquire); late >= 0) return late;
  const int fl = fcntl(r.file_fd, F_GETFL);
  if (fl >= 0 && !(fl & O_DIRECT)) return r.file_fd;
  const int fd = reopen_buffered(r.file_fd);
  if (fd < 0) return r.file_fd;  // the write fails (EINVAL) and the page stays dirty
  int expected = -1;
  if (!const_cast<Range &>(r).tail_fd_late.compare_exchange_strong(expected, fd)) {
    close(fd);
    return expected;
  }
  return fd;
}
}  // namespace

int write_file_pages(const Range &r, size_t page, size_t n, const bool *sel, const char *buf, bool *ok, uint64_t *bytes) {
  *bytes = 0;
  for (size_t i = 0; i < n; ++i) ok[i] = false;
  // Never past the file's end now: truncated while mapped, the pages past the new end are gone
  // from the file, as with a shared mapping (a write there would make the file grow again).
  uint64_t size = r.size;
  struct stat st{};
  if (fstat(r.file_fd, &st) == 0 && static_cast<uint64_t>(st.st_size) < r.file_off + size) {
    const uint64_t now = static_cast<uint64_t>(st.st_size) > r.file_off ? static_cast<uint64_t>(st.st_size) - r.file_off : 0;
    log(Level::warn, "write-back: the file is %llu bytes shorter than the range (truncated while mapped); "
        "what lies past its end is not written", static_cast<unsigned long long>(size - now));
    size = now;
  }
  IoOp io[kBlockPages + 1];
  size_t first[kBlockPages + 1], last[kBlockPages + 1];  // each op's pages [first, last)
  size_t nio = 0;
  for_runs(n, [&](size_t i) { return sel[i]; }, [&](size_t i, size_t j) {
    const uint64_t at = uint64_t{page + i} * kPageSize;
    const uint64_t bytes_run = at >= size ? 0 : std::min<uint64_t>((j - i) * kPageSize, size - at);
    // (O_DIRECT takes whole blocks: a run ending off a page, at the range's or the truncated
    // file's end, writes its last bytes through the buffered descriptor, or all buffered when
    // there is none: a truncation can end a range anywhere.)
    const uint64_t whole = r.file_fd_tail >= 0 || bytes_run % kPageSize == 0 ? bytes_run / kPageSize * kPageSize : 0;
    auto add = [&](int fd, uint64_t from, uint64_t len) {
      IoOp &op = io[nio];
      op.fd = fd;
      op.write = true;
      op.buf = const_cast<char *>(buf) + i * kPageSize + from;
      op.len = len;
      op.off = r.file_off + at + from;
      first[nio] = i;
      last[nio] = j;
      ++nio;
    };
    if (whole) add(r.file_fd, 0, whole);
    if (whole < bytes_run) add(tail_fd(r), whole, bytes_run - whole);  // last bytes off a page: buffered
    if (!bytes_run)
      for (size_t k = i; k < j; ++k) ok[k] = true;  // wholly past the range's bytes: nothing to write
  });
  if (!nio) return 0;
  int err = 0;
  Ring *ring = storage_ring(&err);
  if (!ring) return io_error(err);
  ring->run(io, nio);
  for (size_t k = 0; k < nio; ++k)
    for (size_t p = first[k]; p < last[k]; ++p) ok[p] = true;
  int first_error = 0;
  for (size_t k = 0; k < nio; ++k) {
    *bytes += io[k].done;
    if (!io[k].status) continue;
    for (size_t p = first[k]; p < last[k]; ++p) ok[p] = false;
    log(Level::warn, "write of %zu bytes at offset %llu of a file range failed: %s; the pages stay dirty", io[k].len,
        static_cast<unsigned long long>(io[k].off), strerror(-io[k].status));
    if (!first_error) first_error = io_error(io[k].status);
  }
  return first_error;
}

bool page_past_end(const Range &r, size_t page) {
  struct stat st{};
  return fstat(r.file_fd, &st) == 0 && r.file_off + uint64_t{page} * kPageSize >= static_cast<uint64_t>(st.st_size);
}

}  // namespace umrt::rt
