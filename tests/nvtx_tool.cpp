// nvtx_tool.cpp — a tiny NVTX injection library for test_nvtx: what Nsight Systems would be,
// without Nsight. NVTX loads it from NVTX_INJECTION64_PATH at the process's first NVTX call and
// calls InitializeInjectionNvtx2, which takes over the domain functions of NVTX's CORE2 module
// (domains, registered strings, categories, push/pop and start/end ranges). Every call is
// written as one tab-separated line to the file UMRT_NVTX_TOOL_OUT names:
//   init
//   domain <name>
//   category <domain> <id> <name>
//   push <tid> <domain> <category> <message> <payload or ->
//   pop <tid> <domain>
//   start <tid> <domain> <category> <message> <payload or -> <id>
//   end <tid> <domain> <id>
#define NVTX_NO_IMPL  // a tool: NVTX's types and ids, not its implementation
#include <nvtx3/nvToolsExt.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>

namespace {

std::mutex g_mu;
FILE *g_out = nullptr;
std::deque<std::string> g_domains;  // a domain handle: the address of its name here
std::deque<std::string> g_strings;  // a registered string handle: the address of its text here
uint64_t g_next_id = 1;

const char *domain_name(nvtxDomainHandle_t d) {
  return d ? reinterpret_cast<const std::string *>(d)->c_str() : "(default)";
}

std::string message(const nvtxEventAttributes_t *a) {
  if (!a) return "?";
  switch (a->messageType) {
    case NVTX_MESSAGE_TYPE_ASCII: return a->message.ascii ? a->message.ascii : "";
    case NVTX_MESSAGE_TYPE_REGISTERED:
      return a->message.registered ? *reinterpret_cast<const std::string *>(a->message.registered) : "(null)";
    default: return "?";
  }
}

std::string payload(const nvtxEventAttributes_t *a) {
  if (!a) return "-";
  char buf[32];
  switch (a->payloadType) {
    case NVTX_PAYLOAD_TYPE_UNSIGNED_INT64: std::snprintf(buf, sizeof buf, "%" PRIu64, a->payload.ullValue); return buf;
    case NVTX_PAYLOAD_TYPE_INT64: std::snprintf(buf, sizeof buf, "%" PRId64, a->payload.llValue); return buf;
    default: return "-";
  }
}

long tid() { return static_cast<long>(syscall(SYS_gettid)); }

// Called with g_mu held.
void line(const std::string &s) {
  if (!g_out) return;
  std::fputs(s.c_str(), g_out);
  std::fputc('\n', g_out);
  std::fflush(g_out);
}

std::string event_fields(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) {
  return std::to_string(tid()) + "\t" + domain_name(d) + "\t" + std::to_string(a ? a->category : 0) + "\t" +
         message(a) + "\t" + payload(a);
}

nvtxDomainHandle_t NVTX_API domain_create(const char *name) {
  std::lock_guard g(g_mu);
  g_domains.emplace_back(name ? name : "");
  line("domain\t" + g_domains.back());
  return reinterpret_cast<nvtxDomainHandle_t>(&g_domains.back());
}

void NVTX_API domain_destroy(nvtxDomainHandle_t) {}

nvtxStringHandle_t NVTX_API register_string(nvtxDomainHandle_t, const char *s) {
  std::lock_guard g(g_mu);
  g_strings.emplace_back(s ? s : "");
  return reinterpret_cast<nvtxStringHandle_t>(&g_strings.back());
}

void NVTX_API name_category(nvtxDomainHandle_t d, uint32_t id, const char *name) {
  std::lock_guard g(g_mu);
  line(std::string("category\t") + domain_name(d) + "\t" + std::to_string(id) + "\t" + (name ? name : ""));
}

int NVTX_API push(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) {
  std::lock_guard g(g_mu);
  line("push\t" + event_fields(d, a));
  return 0;
}

int NVTX_API pop(nvtxDomainHandle_t d) {
  std::lock_guard g(g_mu);
  line("pop\t" + std::to_string(tid()) + "\t" + domain_name(d));
  return 0;
}

nvtxRangeId_t NVTX_API start(nvtxDomainHandle_t d, const nvtxEventAttributes_t *a) {
  std::lock_guard g(g_mu);
  const uint64_t id = g_next_id++;
  line("start\t" + event_fields(d, a) + "\t" + std::to_string(id));
  return id;
}

void NVTX_API end(nvtxDomainHandle_t d, nvtxRangeId_t id) {
  std::lock_guard g(g_mu);
  line("end\t" + std::to_string(tid()) + "\t" + domain_name(d) + "\t" + std::to_string(id));
}

template <class Fn>
void attach(NvtxFunctionTable table, unsigned size, unsigned id, Fn fn) {
  if (id < size && table[id]) *table[id] = reinterpret_cast<NvtxFunctionPointer>(fn);
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(NvtxGetExportTableFunc_t get) {
  if (!get) return 0;
  const auto *cb = static_cast<const NvtxExportTableCallbacks *>(get(NVTX_ETID_CALLBACKS));
  if (!cb || cb->struct_size < sizeof *cb || !cb->GetModuleFunctionTable) return 0;
  NvtxFunctionTable t = nullptr;
  unsigned size = 0;
  if (!cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &t, &size) || !t) return 0;
  {
    std::lock_guard g(g_mu);
    const char *path = std::getenv("UMRT_NVTX_TOOL_OUT");
    g_out = path && *path ? std::fopen(path, "w") : nullptr;
    if (!g_out) return 0;  // nowhere to write: not attached
    line("init");
  }
  attach(t, size, NVTX_CBID_CORE2_DomainCreateA, &domain_create);
  attach(t, size, NVTX_CBID_CORE2_DomainDestroy, &domain_destroy);
  attach(t, size, NVTX_CBID_CORE2_DomainRegisterStringA, &register_string);
  attach(t, size, NVTX_CBID_CORE2_DomainNameCategoryA, &name_category);
  attach(t, size, NVTX_CBID_CORE2_DomainRangePushEx, &push);
  attach(t, size, NVTX_CBID_CORE2_DomainRangePop, &pop);
  attach(t, size, NVTX_CBID_CORE2_DomainRangeStartEx, &start);
  attach(t, size, NVTX_CBID_CORE2_DomainRangeEnd, &end);
  return 1;
}
