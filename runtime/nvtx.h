// nvtx.h — NVTX v3 ranges of umrt's work for Nsight Systems (`nsys profile`): domain "umrt", a
// range per batch (direction and why in its registered name, bytes as payload) with its steps
// nested, per fault group, per eviction and per storage I/O, in categories migrate, fault,
// eviction, storage. Built only where the NVTX header is (UMRT_HAVE_NVTX: nvtx3/nvToolsExt.h,
// part of the CUDA toolkit; no GPU needed); elsewhere everything here is an empty inline.
//
// Cost when no tool is attached: setup() creates the domain once at umrt_init, and NVTX gives a
// null domain when no tool is loaded; then umrt never calls NVTX again and a Range is one load
// and a branch (docs/design.md, "NVTX"). With a tool: no formatting either, every name is a
// string registered at setup. Ranges are push/pop: each one opens and closes on one thread.
#pragma once

#include <atomic>
#include <cstdint>

#include "trace.h"

namespace umrt::rt {

enum class Dir : uint8_t;  // batch.h
enum class Why : uint8_t;

namespace nvtx {

enum class Cat : uint32_t { migrate = 1, fault = 2, eviction = 3, storage = 4 };
inline constexpr uint32_t kWhys = 6;  // Why's values (batch.h)

// A range's message: an Ev (trace.h), or a batch's "batch to device (prefetch)" etc.
inline uint32_t msg(Ev e) { return static_cast<uint32_t>(e); }
inline uint32_t batch_msg(Dir d, Why w) {
  return static_cast<uint32_t>(Ev::count) + static_cast<uint32_t>(d) * kWhys + static_cast<uint32_t>(w);
}
inline constexpr uint32_t kMsgs = static_cast<uint32_t>(Ev::count) + 2 * kWhys;

#if UMRT_HAVE_NVTX
extern std::atomic<bool> g_on;  // a tool took the domain: set once, never cleared
// Once per process (umrt_init): NVTX's own initialisation (loads the tool NVTX_INJECTION64_PATH
// names, if any), the domain, its strings and categories. Never throws.
void setup();
inline bool on() { return g_on.load(std::memory_order_acquire); }
void push(uint32_t msg, Cat c, uint64_t bytes);  // bytes 0: no payload
void pop();
#else
inline void setup() {}
inline bool on() { return false; }
inline void push(uint32_t, Cat, uint64_t) {}
inline void pop() {}
#endif

// One range on the calling thread, closed when the object goes; step(e) opens a nested range in
// place of the previous step's (a batch's collect -> unmap -> copy -> finalize).
class Range {
 public:
  Range(uint32_t m, Cat c, uint64_t bytes) : on_(on()), cat_(c) {
    if (on_) push(m, c, bytes);
  }
  Range(Ev e, Cat c, uint64_t bytes) : Range(msg(e), c, bytes) {}
  Range(const Range &) = delete;
  Range &operator=(const Range &) = delete;
  ~Range() { end(); }
  void end() {  // closes it before the object goes (idempotent)
    if (!on_) return;
    if (in_step_) pop();
    pop();
    on_ = false;
  }
  void step(Ev e) {
    if (!on_) return;
    if (in_step_) pop();
    push(msg(e), cat_, 0);
    in_step_ = true;
  }

 private:
  bool on_;
  bool in_step_ = false;
  Cat cat_;
};

}  // namespace nvtx
}  // namespace umrt::rt
