// storage.h — umrt-bench's storage scenarios (issue 11), each next to its baselines in one run:
//
//   file-read       CPU first touch of a cold file (page cache dropped, or O_DIRECT): sequential
//                   (one byte per page, in order) through umrt_map_file, through mmap of the same
//                   file, and raw io_uring O_DIRECT reads of it (2 MiB, 4 in flight: the limit);
//                   random 4 KiB (fault window 1): umrt's p50 per access next to a raw 4 KiB
//                   O_DIRECT read and the bare userfaultfd round trip;
//   file-to-device  the whole file prefetched to the device, next to raw io_uring reads of it;
//   spill           an anonymous working set 2x UMRT_HOST_MEMORY written and read pass after
//                   pass, its storage traffic per second next to raw O_DIRECT write + read of a
//                   file in the swap directory.
// The file lives in --storage-dir (default $TMPDIR, else /tmp) and is removed at the end.
#pragma once

#include <umrt/umrt.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "scale.h"

namespace bench::storage {

using json = nlohmann::ordered_json;

struct Options {
  size_t file_bytes = size_t{256} << 20;
  size_t random_reads = 2000;
  size_t spill_budget = size_t{64} << 20;  // UMRT_HOST_MEMORY of spill (working set 2x)
  std::string dir;                         // "": $TMPDIR or /tmp
  unsigned reps = 3, warmup = 1;
  uint64_t seed = 1;
};

struct Hooks {
  std::function<umrt_config()> config;
  std::function<void(const umrt_config &)> restart;
};

// scenario: "file-read", "file-to-device" or "spill". Targets (issue 11) are appended.
json run(const std::string &scenario, const Options &o, const Hooks &h, std::vector<bench::scale::Target> &targets);

}  // namespace bench::storage
