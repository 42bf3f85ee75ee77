// storage/file_store.h — pages of file-backed ranges (umrt_map_file): opening and checking the
// file, and reading runs of a range's pages through the calling thread's ring (ring.h) into a
// staging buffer, from which a batch maps them (to the host) or copies them (to the device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "io_staging.h"

namespace umrt::rt {

struct Range;
class Ring;

// Open `path` for a file range over [offset, offset + *size) (*size 0: to the end of
// the file; set to what is mapped). Returns the fd, or -errno with *why saying what is wrong
// (not a regular file, offset not page aligned or past the end, span past the end).
// writable (UMRT_MAP_WRITE): opened read-write (a read-only file or file system: -EACCES or
// -EROFS with *why saying so), and *tail_fd set to a buffered descriptor of the same file when
// the fd is O_DIRECT and the span ends inside a page (else -1).
int open_file_range(const char *path, uint64_t offset, uint64_t *size, bool writable, int *tail_fd, std::string *why);

// Read pages [page, page + n) of r into buf: the file's bytes, zeros after the last byte the
// range maps (r.size). Returns 0, or -errno: the read failed, or the file is shorter now than
// the range (truncated while mapped): -ENODATA, and then the first *ok pages are good all the
// same (the page holding the new end with zeros after it, as mmap gives). *bytes: file bytes
// read.
int read_file_pages(const Range &r, size_t page, size_t n, char *buf, uint64_t *bytes, size_t *ok);

// Write the selected pages of [page, page + n) of a writable file range r from buf (page i at
// buf + i pages) to its file, runs of them in one ring submission; only bytes the range maps
// (r.size: the file never grows), its last bytes inside a page through the buffered descriptor.
// ok[i]: page i written. Returns 0 or the first error (io_error-tagged); *bytes: bytes written.
int write_file_pages(const Range &r, size_t page, size_t n, const bool *sel, const char *buf, bool *ok, uint64_t *bytes);

// Whether page `page` of r lies wholly past the end of its file now (truncated while mapped).
bool page_past_end(const Range &r, size_t page);

}  // namespace umrt::rt
