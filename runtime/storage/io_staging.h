// storage/io_staging.h — each thread's I/O staging buffer: where file and swap reads land and
// writes are gathered, registered with the thread's io_uring ring (fixed buffer 0) and, while a
// runtime runs, with the device (Backend::pin_host), so one buffer serves both: the kernel reads
// into it without pinning pages per op, and the DMA engine copies from it without a second copy
// through the backend's own pinned slots (issue 11: "allocate staging so that both work").
#pragma once

#include <cstdint>

namespace umrt::rt {

class Backend;
class Ring;

// This thread's staging buffer: 2 MiB (one batch), page aligned; nullptr when out of memory.
char *file_staging();
// The same buffer for a copy to the device: *pinned says whether it is registered with the
// running backend (first use under each runtime tries once; a refusal is remembered for that
// runtime), so its H2D ops may be CopyOp::pinned. nullptr when out of memory.
char *device_staging(bool *pinned);
// This thread's ring (Ring::mine) with its staging buffer registered (fixed buffer 0), where the
// kernel takes it: ops on staging then skip the per-op page pinning. nullptr (*err) as mine().
Ring *storage_ring(int *err);

// Runtime start (the backend made) and stop (before the backend goes): every buffer registered
// with the device is unregistered at stop, and a thread's buffer at its exit, before it is freed.
void staging_pins_open(Backend *b);
void staging_pins_close();

}  // namespace umrt::rt
