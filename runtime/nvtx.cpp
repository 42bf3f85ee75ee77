// nvtx.cpp — umrt's NVTX v3 domain, registered strings and categories, and the push/pop behind
// nvtx::Range (see nvtx.h). Compiled only where nvtx3/nvToolsExt.h is found (UMRT_HAVE_NVTX).
#include "nvtx.h"

#include <nvtx3/nvToolsExt.h>

#include <cstdio>

#include "batch.h"

namespace umrt::rt::nvtx {

std::atomic<bool> g_on{false};

namespace {

nvtxDomainHandle_t g_domain = nullptr;
nvtxStringHandle_t g_msgs[kMsgs] = {};

static_assert(static_cast<uint32_t>(Why::readahead) + 1 == kWhys, "kWhys: Why's values");
static_assert(static_cast<uint32_t>(Dir::to_host) == 1, "batch_msg: two directions");

uint32_t color(Cat c) {  // ARGB
  switch (c) {
    case Cat::migrate: return 0xff3c78d8;   // blue
    case Cat::fault: return 0xffe69138;     // orange
    case Cat::eviction: return 0xffcc0000;  // red
    case Cat::storage: return 0xff6aa84f;   // green
  }
  return 0xff999999;
}

void setup_once() {
  // The first NVTX call of the process: NVTX initialises here (dlopen of the tool, if any), at
  // umrt_init, never later in a fault path. No tool: a null domain, and umrt stays off.
  nvtxDomainHandle_t d = nvtxDomainCreateA("umrt");
  if (!d) return;
  for (uint32_t e = 0; e < static_cast<uint32_t>(Ev::count); ++e)
    g_msgs[e] = nvtxDomainRegisterStringA(d, ev_name(static_cast<Ev>(e)));
  for (uint32_t dir = 0; dir < 2; ++dir)
    for (uint32_t w = 0; w < kWhys; ++w) {
      char name[64];
      std::snprintf(name, sizeof name, "%s (%s)", ev_name(dir == 0 ? Ev::batch_to_device : Ev::batch_to_host),
                    why_name(static_cast<Why>(w)));
      g_msgs[batch_msg(static_cast<Dir>(dir), static_cast<Why>(w))] = nvtxDomainRegisterStringA(d, name);
    }
  nvtxDomainNameCategoryA(d, static_cast<uint32_t>(Cat::migrate), "migrate");
  nvtxDomainNameCategoryA(d, static_cast<uint32_t>(Cat::fault), "fault");
  nvtxDomainNameCategoryA(d, static_cast<uint32_t>(Cat::eviction), "eviction");
  nvtxDomainNameCategoryA(d, static_cast<uint32_t>(Cat::storage), "storage");
  g_domain = d;
  g_on.store(true, std::memory_order_release);
}

}  // namespace

void setup() {
  static const bool done = (setup_once(), true);  // thread-safe, once per process
  (void)done;
}

void push(uint32_t m, Cat c, uint64_t bytes) {
  nvtxEventAttributes_t a{};
  a.version = NVTX_VERSION;
  a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  a.category = static_cast<uint32_t>(c);
  a.colorType = NVTX_COLOR_ARGB;
  a.color = color(c);
  if (bytes) {
    a.payloadType = NVTX_PAYLOAD_TYPE_UNSIGNED_INT64;
    a.payload.ullValue = bytes;
  }
  a.messageType = NVTX_MESSAGE_TYPE_REGISTERED;
  a.message.registered = m < kMsgs ? g_msgs[m] : nullptr;
  nvtxDomainRangePushEx(g_domain, &a);
}

void pop() { nvtxDomainRangePop(g_domain); }

}  // namespace umrt::rt::nvtx
