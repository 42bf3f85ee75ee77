// test_nvtx.cpp — umrt's NVTX ranges (runtime/nvtx.h) as a tool receives them, without Nsight:
// the workload runs in a fresh copy of this binary (NVTX initialises once per process, at its
// first call) with NVTX_INJECTION64_PATH naming tests/nvtx_tool.cpp's library, which writes every
// call it gets to a file; this process reads the file back and checks the domain, categories,
// the ranges' names, categories, payloads and nesting, and that every thread's pushes and pops
// balance. Skips, saying why, where umrt was built without the NVTX header.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

using namespace umrt_test;

#ifndef UMRT_TEST_NVTX_TOOL
TEST(Nvtx, RangesReachAnInjectedTool) {
  GTEST_SKIP() << "umrt built without NVTX (nvtx3/nvToolsExt.h, from the CUDA toolkit, not found, or "
                  "UMRT_WITH_NVTX=OFF): no ranges to check";
}
#else
constexpr int kSkipCode = 77;  // the child: userfaultfd unavailable

// The workload, in the child: prefetches to the device and back, faults, evictions (two device
// blocks for four), a file read and its write-back.
void child_workload() {
  umrt_config cfg = sim_config(4 * MiB);  // two 2 MiB chunks
  umrt_status st = umrt_init(&cfg);
  if (st == UMRT_ERROR_NOT_SUPPORTED) {
    std::fprintf(stderr, "userfaultfd unavailable: %s\n", last_error());
    std::fflush(stderr);
    std::_Exit(kSkipCode);
  }
  ASSERT_EQ(st, UMRT_SUCCESS) << last_error();
  {
    Managed a(4 * MiB), b(4 * MiB);
    ASSERT_TRUE(a && b);
    fill_pattern(a.get(), a.bytes(), 1);
    fill_pattern(b.get(), b.bytes(), 2);
    // To the device and back: two batches each way.
    ASSERT_EQ(umrt_prefetch(a.get(), a.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_EQ(umrt_prefetch(a.get(), a.bytes(), UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
    // To the device, then read: fault groups bring it back.
    ASSERT_EQ(umrt_prefetch(a.get(), a.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    EXPECT_TRUE(check_pattern(a.get(), a.bytes(), 1));
    // a on the device fills it; b there evicts a's two blocks.
    ASSERT_EQ(umrt_prefetch(a.get(), a.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_EQ(umrt_prefetch(b.get(), b.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    umrt_stats s = get_stats();
    EXPECT_GE(s.evictions, 2u);
    EXPECT_TRUE(check_pattern(b.get(), b.bytes(), 2));
  }
  // A file: read in by faults, written, flushed.
  char file[] = "/tmp/umrt-nvtx-file-XXXXXX";
  int fd = mkstemp(file);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> bytes(2 * MiB, 7);
  ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  close(fd);
  void *p = nullptr;
  ASSERT_EQ(umrt_map_file(file, 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE, &p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(static_cast<volatile uint8_t *>(p)[12345], 7);
  std::memset(p, 1, 2 * MiB);
  EXPECT_EQ(umrt_flush(p, 2 * MiB), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  unlink(file);
  EXPECT_EQ(umrt_shutdown(), UMRT_SUCCESS);
}

// One range as the tool saw it.
struct Node {
  long tid = 0;
  std::string domain, msg, payload;
  unsigned cat = 0;
  int parent = -1;
  std::vector<int> kids;
};

struct Log {
  bool init = false;
  std::vector<std::string> domains;
  std::map<unsigned, std::string> cats;  // of domain umrt
  std::vector<Node> nodes;
  std::vector<std::string> errors;  // unbalanced pops, ranges left open
};

std::vector<std::string> fields(const std::string &line) {
  std::vector<std::string> f;
  std::stringstream ss(line);
  for (std::string x; std::getline(ss, x, '\t');) f.push_back(x);
  return f;
}

Log parse(const std::string &path) {
  Log l;
  std::ifstream in(path);
  std::map<long, std::vector<int>> stacks;  // per thread: open ranges
  for (std::string line; std::getline(in, line);) {
    auto f = fields(line);
    if (f.empty()) continue;
    if (f[0] == "init") l.init = true;
    else if (f[0] == "domain" && f.size() == 2) l.domains.push_back(f[1]);
    else if (f[0] == "category" && f.size() == 4 && f[1] == "umrt") l.cats[std::stoul(f[2])] = f[3];
    else if (f[0] == "push" && f.size() == 6) {
      Node n;
      n.tid = std::stol(f[1]);
      n.domain = f[2];
      n.cat = static_cast<unsigned>(std::stoul(f[3]));
      n.msg = f[4];
      n.payload = f[5];
      auto &st = stacks[n.tid];
      n.parent = st.empty() ? -1 : st.back();
      const int id = static_cast<int>(l.nodes.size());
      if (n.parent >= 0) l.nodes[n.parent].kids.push_back(id);
      l.nodes.push_back(n);
      st.push_back(id);
    } else if (f[0] == "pop" && f.size() == 3) {
      auto &st = stacks[std::stol(f[1])];
      if (st.empty()) l.errors.push_back("pop with no range open on thread " + f[1]);
      else st.pop_back();
    } else if (f[0] == "start" || f[0] == "end") {
      l.errors.push_back("start/end range (umrt uses push/pop): " + line);
    }
  }
  for (auto &[tid, st] : stacks)
    for (int id : st) l.errors.push_back("range left open on thread " + std::to_string(tid) + ": " + l.nodes[id].msg);
  return l;
}

std::string read_all(const std::string &path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string tmp_path(const char *stem) {
  std::string t = std::string("/tmp/") + stem + "-XXXXXX";
  int fd = mkstemp(t.data());
  if (fd >= 0) close(fd);
  return fd >= 0 ? t : std::string();
}

constexpr unsigned kMigrate = 1, kFault = 2, kEviction = 3, kStorage = 4;  // nvtx.h's Cat
const std::string k2M = std::to_string(2 * MiB);

TEST(Nvtx, RangesReachAnInjectedTool) {
  if (std::getenv("UMRT_NVTX_CHILD")) {
    child_workload();
    return;
  }
  umrt_shutdown();
  const std::string out = tmp_path("umrt-nvtx"), err = tmp_path("umrt-nvtx-err");
  ASSERT_FALSE(out.empty() || err.empty());
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(err.c_str(), O_WRONLY | O_TRUNC);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    setenv("UMRT_NVTX_CHILD", "1", 1);
    setenv("NVTX_INJECTION64_PATH", UMRT_TEST_NVTX_TOOL, 1);
    setenv("UMRT_NVTX_TOOL_OUT", out.c_str(), 1);
    char exe[] = "/proc/self/exe";
    std::string filter = "--gtest_filter=Nvtx.RangesReachAnInjectedTool";
    char *argv[] = {exe, filter.data(), nullptr};
    execv(exe, argv);
    std::fprintf(stderr, "execv: %s\n", strerror(errno));
    _exit(127);
  }
  ASSERT_GT(pid, 0) << strerror(errno);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  const std::string child_out = read_all(err);
  const Log l = parse(out);
  unlink(out.c_str());
  unlink(err.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == kSkipCode) GTEST_SKIP() << child_out;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child failed (status " << status << "):\n"
                                                               << child_out;

  ASSERT_TRUE(l.init) << "the tool was not loaded (NVTX_INJECTION64_PATH=" UMRT_TEST_NVTX_TOOL ")";
  EXPECT_EQ(std::count(l.domains.begin(), l.domains.end(), "umrt"), 1) << "domain umrt created once";
  EXPECT_EQ(l.cats, (std::map<unsigned, std::string>{
                        {kMigrate, "migrate"}, {kFault, "fault"}, {kEviction, "eviction"}, {kStorage, "storage"}}));
  for (const std::string &e : l.errors) ADD_FAILURE() << e;  // balanced push/pop on every thread

  auto named = [&](const std::string &msg) {
    std::vector<const Node *> v;
    for (const Node &n : l.nodes)
      if (n.msg == msg) v.push_back(&n);
    return v;
  };
  auto parent = [&](const Node *n) { return n->parent >= 0 ? &l.nodes[n->parent] : nullptr; };
  for (const Node &n : l.nodes) EXPECT_EQ(n.domain, "umrt") << n.msg;

  // Batches: direction and why in the name, bytes as payload, in their category; their steps
  // nested in order (collect alone when the batch found nothing to move).
  const auto to_dev = named("batch to device (prefetch)");
  const auto to_host = named("batch to host (prefetch)");
  EXPECT_GE(to_dev.size(), 6u) << "three prefetches of a (two blocks each) and one of b";
  EXPECT_EQ(to_host.size(), 2u) << "one prefetch of a back to host, two blocks";
  for (const auto *v : {&to_dev, &to_host})
    for (const Node *n : *v) {
      EXPECT_EQ(n->cat, kMigrate) << n->msg;
      EXPECT_EQ(n->payload, k2M) << n->msg << ": 512 pages, 2 MiB";
    }
  size_t full = 0;
  for (const Node &n : l.nodes) {
    if (n.msg.rfind("batch to ", 0) != 0) continue;
    std::vector<std::string> steps;
    for (int k : n.kids) steps.push_back(l.nodes[k].msg);
    if (steps.size() == 4) ++full;
    EXPECT_TRUE(steps == std::vector<std::string>{"collect"} ||
                steps == (std::vector<std::string>{"collect", "unmap", "copy", "finalize"}))
        << n.msg << ": steps " << ::testing::PrintToString(steps);
    for (int k : n.kids) EXPECT_EQ(l.nodes[k].cat, n.cat) << n.msg << " / " << l.nodes[k].msg;
  }
  EXPECT_GE(full, 8u);

  // Fault groups, with the fault's batch inside.
  const auto groups = named("fault group");
  ASSERT_FALSE(groups.empty());
  size_t group_batches = 0;
  for (const Node *g : groups) {
    EXPECT_EQ(g->cat, kFault);
    EXPECT_NE(g->payload, "-");
    EXPECT_GT(std::stoull(g->payload == "-" ? "0" : g->payload), 0u);
    EXPECT_EQ(std::stoull(g->payload == "-" ? "0" : g->payload) % 4096, 0u) << "bytes of whole pages";
    for (int k : g->kids) {
      const Node &b = l.nodes[k];
      if (b.msg == "batch to host (fault)" || b.msg == "batch to host (fault_write)") {
        ++group_batches;
        EXPECT_EQ(b.cat, kFault);
        EXPECT_EQ(b.tid, g->tid);
      }
    }
  }
  EXPECT_GE(group_batches, 1u) << "the read of a (on the device) faults it back";
  for (const Node *b : named("batch to host (fault)"))
    EXPECT_TRUE(parent(b) && parent(b)->msg == "fault group") << "a fault's batch outside a fault group";

  // Evictions: inside the copy step of the prefetch that needed the room, each a victim block's
  // batch to host.
  const auto evictions = named("eviction");
  EXPECT_GE(evictions.size(), 2u) << "b's two blocks evict a's two";
  for (const Node *e : evictions) {
    EXPECT_EQ(e->cat, kEviction);
    EXPECT_EQ(e->payload, k2M);
    const Node *step = parent(e);
    ASSERT_TRUE(step && step->msg == "copy") << "eviction outside a batch's copy step";
    ASSERT_TRUE(parent(step) && parent(step)->msg == "batch to device (prefetch)");
    ASSERT_EQ(e->kids.size(), 1u);
    EXPECT_EQ(l.nodes[e->kids[0]].msg, "batch to host (evict)");
    EXPECT_EQ(l.nodes[e->kids[0]].cat, kEviction);
    EXPECT_EQ(l.nodes[e->kids[0]].payload, k2M);
  }

  // Storage: the file's read inside a fault's copy step, its write-back.
  const auto reads = named("read file");
  ASSERT_FALSE(reads.empty());
  for (const Node *r : reads) {
    EXPECT_EQ(r->cat, kStorage);
    EXPECT_TRUE(parent(r) && parent(r)->msg == "copy");
  }
  const auto wbs = named("write-back");
  ASSERT_FALSE(wbs.empty());
  for (const Node *w : wbs) {
    EXPECT_EQ(w->cat, kStorage);
    EXPECT_NE(w->payload, "-");
  }
}
#endif  // UMRT_TEST_NVTX_TOOL

}  // namespace
