/** @file umrt.h
 * umrt.h — the public C API of umrt, a userspace unified memory runtime.
 *
 * One managed allocation (umrt_malloc) is a host virtual range whose pages live in host memory
 * or in device memory and move between them on demand: CPU accesses to device-resident pages
 * are caught with userfaultfd and served by migrating the pages back; device use is declared
 * with umrt_prefetch(..., UMRT_LOCATION_DEVICE, ...) before kernels run and addressed through
 * umrt_device_pointer().
 *
 * Every function returns a umrt_status; on failure nothing was changed and umrt_last_error()
 * holds a thread-local message saying why. All functions are thread-safe. No function throws.
 */
#ifndef UMRT_UMRT_H
#define UMRT_UMRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What every function returns: UMRT_SUCCESS, or why nothing was done (umrt_last_error() says more). */
typedef enum umrt_status {
  UMRT_SUCCESS = 0,            /**< done as asked                                                  */
  UMRT_ERROR_INVALID_VALUE,    /**< bad pointer, size, flag or location; nothing was changed     */
  UMRT_ERROR_OUT_OF_MEMORY,    /**< host or device memory exhausted even after eviction           */
  UMRT_ERROR_NOT_SUPPORTED,    /**< e.g. userfaultfd refused by the kernel                        */
  UMRT_ERROR_NO_DEVICE,        /**< the requested backend cannot run here                          */
  UMRT_ERROR_BACKEND,          /**< a device call or copy failed; umrt_last_error() says which    */
  UMRT_ERROR_IO,               /**< a read, write or fdatasync of a file (umrt_map_file) failed;
                                  pages not written stay dirty, nothing is dropped              */
} umrt_status;                 /**< (More codes may follow these.)                                 */

/** Where a page is (umrt_page_location) or is to go (umrt_prefetch: HOST or DEVICE). */
typedef enum umrt_location {
  UMRT_LOCATION_HOST = 0,    /**< host memory (also a page never touched: it reads as zero)    */
  UMRT_LOCATION_DEVICE = 1,  /**< device memory (umrt_device_pointer() addresses it)             */
  UMRT_LOCATION_STORAGE = 2, /**< the page's data is only in storage: its file (umrt_map_file), or
                                the swap file (UMRT_HOST_MEMORY)                               */
} umrt_location;

/** umrt_map_file flags. */
typedef enum umrt_map_flags {
  UMRT_MAP_READ = 1,  /**< pages come from the file                                              */
  UMRT_MAP_WRITE = 2, /**< with READ: written pages go back to the file (umrt_flush, umrt_free)  */
} umrt_map_flags;

/** Which device umrt runs on (umrt_config.backend). */
typedef enum umrt_backend_kind {
  UMRT_BACKEND_DEFAULT = 0, /**< from UMRT_BACKEND, else auto */
  UMRT_BACKEND_AUTO,        /**< cuda when a GPU is usable, else sim */
  UMRT_BACKEND_SIM,         /**< simulated device (memfd arena), runs everywhere */
  UMRT_BACKEND_CUDA,        /**< a real GPU */
} umrt_backend_kind;

/** What umrt writes to stderr (umrt_config.log_level). */
typedef enum umrt_log_level {
  UMRT_LOG_DEFAULT = 0, /**< from UMRT_LOG, else warn */
  UMRT_LOG_ERROR,       /**< failures that lose something or stop umrt */
  UMRT_LOG_WARN,        /**< ... and what the program should know (the default) */
  UMRT_LOG_INFO,        /**< ... and choices made (O_DIRECT or buffered, backend, budget) */
  UMRT_LOG_DEBUG,       /**< ... and per-batch detail */
} umrt_log_level;

/** What a CPU write to a page that an in-flight host->device batch has locked does. */
typedef enum umrt_write_fault_policy {
  UMRT_WRITE_FAULT_DEFAULT = 0, /**< from UMRT_WRITE_FAULT, else cancel (see docs/design.md) */
  UMRT_WRITE_FAULT_CANCEL,      /**< the page's migration is cancelled; the writer goes on at once */
  UMRT_WRITE_FAULT_WAIT,        /**< the writer waits for the batch, then faults the page back    */
} umrt_write_fault_policy;

/** @page environment Environment variables
 * Environment variables not tied to a umrt_config field (the others are named next to their
 * field): UMRT_TRACE=FILE writes every batch and its protocol steps (storage reads, write-backs
 * and spills too) as a Chrome trace (scripts/plot_trace.py draws it); UMRT_SWAP_DIR=DIR is where
 * the host budget's swap file goes (default $TMPDIR, else /tmp; the file is unlinked at
 * creation); UMRT_SIM_FAIL_ALLOC=N / UMRT_SIM_FAIL_COPY=N make the Nth frame allocation / copy
 * fail (for tests, as umrt_inject_failure); UMRT_STAT=1|on (the default) or 0|off: publish live
 * statistics and the largest allocations for the umrt-stat tool in /dev/shm/umrt.<pid> (mode
 * 0400: the owner and root may read it; removed at umrt_shutdown and at exit), rewritten every
 * UMRT_STAT_INTERVAL milliseconds (1 to 10000, default 250). Bad values make umrt_init (and
 * umrt_config_defaults) return INVALID_VALUE naming the variable. */

/** Runtime configuration. Zero in any field means "take it from the environment, else the
 * default"; umrt_config_defaults() fills a struct with what umrt_init(NULL) would use. */
typedef struct umrt_config {
  umrt_backend_kind backend;          /**< UMRT_BACKEND=auto|cuda|sim                            */
  uint64_t device_memory;             /**< bytes; UMRT_DEVICE_MEMORY (K/M/G suffixes); default:
                                         sim 4G, cuda 90% of the GPU's free memory at init     */
  umrt_log_level log_level;           /**< UMRT_LOG=error|warn|info|debug                        */
  uint32_t copy_threads;              /**< copy engines (cuda: each with a stream and pinned
                                         staging); UMRT_COPY_THREADS; default: usable CPUs - 1,
                                         1 to 8                                                */
  uint32_t prefetch_min_pages;        /**< fault prefetch window start; UMRT_PREFETCH_MIN; 4     */
  uint32_t prefetch_max_pages;        /**< window cap (<= 512); UMRT_PREFETCH_MAX; 512           */
  umrt_write_fault_policy write_fault;/**< UMRT_WRITE_FAULT=cancel|wait                        */
  double sim_bandwidth_gbps;          /**< sim copy bandwidth limit per engine; UMRT_SIM_BANDWIDTH
                                         (GB/s, 0 = unlimited)                                 */
  uint32_t sim_latency_us;            /**< sim latency added to each copy; UMRT_SIM_LATENCY_US   */
  uint64_t device_pool;               /**< bytes of released device memory kept ready for reuse
                                         (sim: arena pages stay allocated; cuda: chunk handles
                                         stay created); past it, and at shutdown, memory goes
                                         back to the system. UMRT_DEVICE_POOL (K/M/G, or none);
                                         0: a quarter of device_memory; below 2 MiB: none      */
  uint32_t fault_threads;             /**< fault-service threads (CPU faults of different device
                                         blocks are served concurrently); UMRT_FAULT_THREADS;
                                         default: usable CPUs, 1 to 8; at most 64              */
  uint64_t host_pool;                 /**< bytes of host pages that moved to the device kept (not
                                         freed) to hold the next pages coming home (no page
                                         freed, none allocated; Linux >= 6.8, else none).
                                         UMRT_HOST_POOL (K/M/G, or none); 0: 256 MiB; below
                                         2 MiB: none. Freed at shutdown                        */
  uint64_t host_memory;               /**< the host-memory budget: bytes of host memory that
                                         managed pages may hold; past it the coldest blocks
                                         leave for storage (clean file pages dropped, dirty ones
                                         written back, anonymous pages to a swap file in
                                         UMRT_SWAP_DIR, default $TMPDIR or /tmp, unlinked) and
                                         come back on access. UMRT_HOST_MEMORY (K/M/G);
                                         0 and unset: no budget; at least 4 MiB. Small
                                         allocations (< 2 MiB, packed) count but do not leave */
} umrt_config;

/** Statistics since umrt_init. Fields only ever get appended. */
typedef struct umrt_stats {
  uint64_t cpu_faults;        /**< userfaultfd page-fault messages served                        */
  uint64_t bytes_to_device;   /**< bytes moved host->device: copied from host memory and published
                                 (zero-fill excluded; storage->device: bytes_from_storage)    */
  uint64_t bytes_to_host;     /**< bytes copied device->host (zero-fill excluded)                */
  uint64_t evictions;         /**< blocks evicted from device memory                             */
  uint64_t batches;           /**< protocol runs (collect..finalize)                             */
  uint64_t pages_to_device;   /**< pages copied to the device (= bytes_to_device / 4096)         */
  uint64_t pages_to_host;     /**< pages copied to the host (= bytes_to_host / 4096)             */
  uint64_t zero_fills;        /**< never-touched pages materialised as zeros, either side (no copy) */
  uint64_t pages_restored;    /**< selected pages that could not move and were restored          */
  uint64_t pages_skipped_locked; /**< pages another batch held (first locker wins)                */
  uint64_t fault_groups;      /**< fault batches (faults grouped per block)                      */
  uint64_t write_faults;      /**< write-protect faults on pages locked by a host->device batch  */
  uint64_t write_cancels;     /**< ... of which cancelled that page's migration                  */
  uint64_t device_bytes_in_use;  /**< device memory held by chunks now                          */
  uint64_t device_capacity;   /**< device memory capacity                                        */
  uint64_t pages_selected;    /**< pages batches locked to move (/ batches = pages per batch)    */
  uint64_t ns_collect;        /**< time spent in each protocol step, summed over all batches     */
  uint64_t ns_unmap;          /**< ... unmap (write-protect, device wait)                       */
  uint64_t ns_copy;           /**< ... copy (allocation, copies, storage reads, installs)       */
  uint64_t ns_finalize;       /**< ... finalize (publish, release, restore, unlock)             */
  uint64_t host_pool_pages;   /**< host pages kept for reuse now (umrt_config.host_pool); a page
                                 only ever read (the shared zero page) counts without memory   */
  uint64_t host_pages_reused; /**< pages that came home into a kept page, not a new one          */
  uint64_t bytes_from_storage; /**< bytes read from files (umrt_map_file) and the swap file        */
  uint64_t bytes_to_storage;   /**< bytes written back to files (UMRT_MAP_WRITE) and to swap      */
  uint64_t host_pages;         /**< host pages managed ranges hold now (what UMRT_HOST_MEMORY caps) */
  uint64_t swap_outs;          /**< anonymous pages written to the swap file (host budget)        */
  uint64_t swap_ins;           /**< ... read back from it                                         */
  uint64_t pages_dropped_clean; /**< file pages the host budget dropped (the file has them)       */
} umrt_stats;

/** Fault injection, for tests (sim and cuda backends). */
typedef enum umrt_inject_kind {
  UMRT_INJECT_ALLOC = 1, /**< the nth next destination frame allocation of a batch fails */
  UMRT_INJECT_COPY = 2,  /**< the nth next copy (one coalesced run) fails                */
  UMRT_INJECT_CHUNK = 3, /**< the nth next creation of a device-memory chunk fails as out of
                            memory (as when another user took the GPU's memory after
                            umrt_init): umrt evicts and retries, and its capacity shrinks */
  UMRT_INJECT_READ = 4,  /**< the nth next storage read (one io_uring op, any thread) fails: EIO */
  UMRT_INJECT_WRITE = 5, /**< ... storage write                                                  */
  UMRT_INJECT_SYNC = 6,  /**< ... fdatasync                                                      */
} umrt_inject_kind;

umrt_status umrt_config_defaults(umrt_config *cfg);  /**< defaults + UMRT_* environment          */
umrt_status umrt_init(const umrt_config *cfg);      /**< NULL: defaults + UMRT_* environment;
                                                       other calls initialise lazily            */
umrt_status umrt_shutdown(void);                    /**< all pages back to host, threads joined;
                                                       UMRT_MAP_WRITE ranges flushed first (on
                                                       failure: that error, umrt still running).
                                                       Ranges not freed stay mapped as plain
                                                       memory (file ranges: writes no longer reach
                                                       the file); umrt_free unmaps them         */
umrt_status umrt_malloc(void **ptr, size_t size);   /**< size 0 -> INVALID_VALUE                   */
umrt_status umrt_free(void *ptr);                   /**< not from umrt_malloc / twice -> INVALID;
                                                       like cudaFree, waits for all queued device
                                                       work before it gives device memory back
                                                       (only when it gives some back). A
                                                       UMRT_MAP_WRITE range is flushed first; if
                                                       that fails -> UMRT_ERROR_IO and the range
                                                       stays allocated (free it again later)    */
umrt_status umrt_map_file(const char *path, uint64_t offset, size_t size, unsigned flags, void **ptr);
                                                    /**< a managed range over bytes [offset, offset
                                                       + size) of the regular file at path; offset
                                                       a multiple of 4096; size 0 = to the end of
                                                       the file. flags UMRT_MAP_READ: a private
                                                       view (CPU writes stay in memory, as with
                                                       mmap MAP_PRIVATE); | UMRT_MAP_WRITE: pages
                                                       written go back to the file (umrt_flush;
                                                       umrt_free and umrt_shutdown flush first):
                                                       written by the CPU (tracked per page), or
                                                       prefetched to the device (taken as written:
                                                       a kernel may write them). The file never
                                                       grows. Pages not read yet are
                                                       UMRT_LOCATION_STORAGE; a CPU access, or a
                                                       prefetch to either side, reads them (io_uring;
                                                       to the device without a host copy). Bytes
                                                       past the end of the file in the last page
                                                       read as zero. Bad path/offset/size/flags, or
                                                       UMRT_MAP_WRITE on a file that cannot be
                                                       opened for writing (permissions, read-only
                                                       file system) -> INVALID_VALUE (message says
                                                       which); io_uring refused -> NOT_SUPPORTED */
umrt_status umrt_flush(const void *ptr, size_t size);
                                                    /**< the dirty pages covering [ptr, ptr+size) of
                                                       one UMRT_MAP_WRITE range written to its file,
                                                       on disk (fdatasync) when it returns SUCCESS.
                                                       A write or fdatasync failure -> UMRT_ERROR_IO:
                                                       the pages stay dirty (a later flush writes
                                                       them). A UMRT_MAP_READ range: SUCCESS,
                                                       nothing to write. An anonymous range or a
                                                       pointer not from umrt -> INVALID_VALUE. A
                                                       CPU write to a page while it is written
                                                       waits for that page's write              */
umrt_status umrt_prefetch(const void *ptr, size_t size, umrt_location dst, void *stream);
                                                    /**< pages covering [ptr, ptr+size) of ONE
                                                       allocation; stream NULL = synchronous    */
/** @page streams Streams, contexts, and a deadlock to avoid
 * Stream order (cuda; stream is a cudaStream_t): to the device, the call returns once the data
 * is there, so kernels enqueued on the stream afterwards see it; to the host, the copy first
 * waits for the work queued on the stream. A CPU access to a device-resident page waits for
 * all queued device work before the page comes back. Kernels must use umrt_device_pointer()
 * addresses, never the host address of a managed range.
 * Contexts (cuda): umrt works on the device current on the thread that initialises it (device
 * 0 if none), in that device's primary context (the one the CUDA runtime uses), retained once.
 * Each umrt call makes it current for its own CUDA calls and leaves the calling thread's current
 * context exactly as it was; umrt never calls cudaSetDevice or cudaGetLastError on application
 * threads. Device addresses are mapped for the device, so kernels of any context on that device
 * may use them; a stream given to umrt_prefetch must belong to a context on umrt's device.
 * Deadlock to avoid: a CPU access to a device-resident page waits for all queued device work
 * (above), so a host function (cudaLaunchHostFunc) or a kernel that waits for a CPU thread
 * which touches device-resident managed memory never completes. */
umrt_status umrt_device_pointer(const void *ptr, void **dptr);  /**< device address of that byte  */
umrt_status umrt_page_location(const void *ptr, umrt_location *loc);
                                                    /**< where that byte's page is: HOST, DEVICE, or
                                                       STORAGE (a file's page not read yet, or a
                                                       page in the swap file); never touched: HOST */
umrt_status umrt_get_stats(umrt_stats *out);        /**< statistics since umrt_init (umrt_stats)   */
const char *umrt_status_string(umrt_status s);      /**< "UMRT_SUCCESS", ...; any int: never NULL  */
const char *umrt_last_error(void);                  /**< thread-local detail of the last failure  */

/** Name of the backend in use ("sim", "cuda"); initialises lazily. NULL on failure. */
const char *umrt_backend_name(void);
/** Make the nth next operation of that kind fail (nth >= 1), count times in a row. */
umrt_status umrt_inject_failure(umrt_inject_kind kind, uint64_t nth, uint64_t count);
/** Check every invariant of the page state arrays and device memory; INVALID_VALUE with the
 * first violation in umrt_last_error() if one is broken. Meant for tests and debugging. */
umrt_status umrt_validate(void);

#ifdef __cplusplus
}
#endif

#endif /* UMRT_UMRT_H */
