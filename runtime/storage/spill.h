// storage/spill.h — pushing a block's host pages out of host memory for the host budget
// (host_budget.h), by the protocol's steps (spill.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace umrt::rt {

struct Runtime;
struct Range;

// Pages [first, first + n) of r (one block): its HOST pages leave host memory. An anonymous
// range's go to the swap file (SWAP); a file range's clean pages are dropped and dirty ones
// written back first (NONE: in the file again). Returns the pages that left host memory; pages
// held by others, written meanwhile (cancelled) or that could not be written stay.
// *refused (if given): the kernel would not let a page go (mlock()ed): trying again before the
// block's pages change is pointless.
uint32_t spill_block(Runtime &rt, Range &r, size_t first, size_t n, bool *refused = nullptr);

}  // namespace umrt::rt
