// storage/writeback.h — writing a writable file range's DIRTY pages back to its file
// (umrt_flush, umrt_free, umrt_shutdown), by the protocol's steps (writeback.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace umrt::rt {

struct Runtime;
struct Range;

// Write the DIRTY pages of [first, first + n) of r back to its file (a range that is not a
// writable file range: nothing to do, 0); then, with sync, fdatasync the file. Returns 0 once
// every such page is written (and on disk, with sync), else the first error (io_error-tagged
// for I/O): pages that could not be written stay DIRTY, and after a failed fdatasync every page
// of the span written back is DIRTY again (the next flush writes it again).
int flush_span(Runtime &rt, Range &r, size_t first, size_t n, bool sync);

// Device eviction of a writable file range's block when the host budget is full: its DIRTY
// device pages are written to the file straight from the device and leave it (NONE: in the file
// again) instead of coming home. Returns the pages that left; the rest come home as usual.
uint32_t write_back_device_pages(Runtime &rt, Range &r, size_t first, size_t n);

}  // namespace umrt::rt
