// test_trace.cpp — what explains a benchmark: per-step times and pages per batch in umrt_stats,
// and the UMRT_TRACE Chrome trace of batches and their protocol steps, storage ones included.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include <unistd.h>

#include "test_util.h"

namespace {

using namespace umrt_test;

size_t count_of(const std::string &s, const std::string &what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Trace, StepTimesAndPagesPerBatch) {
  umrt_shutdown();
  umrt_config cfg{};
  cfg.backend = UMRT_BACKEND_SIM;
  cfg.device_memory = 64 * MiB;
  umrt_status st = umrt_init(&cfg);
  if (st == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd unavailable: " << last_error();
  ASSERT_EQ(st, UMRT_SUCCESS) << last_error();
  {
    Managed m(4 * MiB);
    ASSERT_TRUE(m);
    fill_pattern(m.get(), m.bytes(), 1);
    umrt_stats a = get_stats();
    ASSERT_EQ(umrt_prefetch(m.get(), m.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    umrt_stats b = get_stats();
    EXPECT_EQ(b.batches - a.batches, 2u) << "4 MiB = two 2 MiB blocks = two batches";
    EXPECT_EQ(b.pages_selected - a.pages_selected, m.pages());
    EXPECT_GT(b.ns_collect, a.ns_collect);
    EXPECT_GT(b.ns_unmap, a.ns_unmap);
    EXPECT_GT(b.ns_copy, a.ns_copy);
    EXPECT_GT(b.ns_finalize, a.ns_finalize);
  }
  umrt_shutdown();
}

TEST(Trace, ChromeTraceOfBatchesAndSteps) {
  umrt_shutdown();
  char path[] = "/tmp/umrt-trace-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    ScopedEnv env("UMRT_TRACE", path);
    umrt_config cfg{};
    cfg.backend = UMRT_BACKEND_SIM;
    cfg.device_memory = 64 * MiB;
    umrt_status st = umrt_init(&cfg);
    if (st == UMRT_ERROR_NOT_SUPPORTED) {
      unlink(path);
      GTEST_SKIP() << "userfaultfd unavailable: " << last_error();
    }
    ASSERT_EQ(st, UMRT_SUCCESS) << last_error();
    Managed m(2 * MiB + 8 * KiB);
    ASSERT_TRUE(m);
    fill_pattern(m.get(), m.bytes(), 2);
    ASSERT_EQ(umrt_prefetch(m.get(), m.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    EXPECT_TRUE(check_pattern(m.get(), m.bytes(), 2));  // faults back
    m = Managed();
    ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS);  // closes the trace
  }
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string t = ss.str();
  unlink(path);
  ASSERT_GE(t.size(), 4u);
  EXPECT_EQ(t.substr(0, 1), "[");
  EXPECT_EQ(t.substr(t.find_last_not_of("\n"), 1), "]") << "the array is closed at shutdown";
  const size_t to_dev = count_of(t, "\"name\":\"batch to device\"");
  const size_t to_host = count_of(t, "\"name\":\"batch to host\"");
  EXPECT_EQ(to_dev, 2u) << "one batch per block";
  EXPECT_GE(to_host, 1u) << "the fault-back read";
  for (const char *step : {"collect", "unmap", "copy", "finalize"})
    EXPECT_EQ(count_of(t, std::string("\"name\":\"") + step + "\""), to_dev + to_host) << step;
  EXPECT_EQ(count_of(t, "\"ph\":\"X\""), 5 * (to_dev + to_host));
  EXPECT_NE(t.find("\"why\":\"prefetch\""), std::string::npos);
  EXPECT_NE(t.find("\"why\":\"fault\""), std::string::npos);
}

// The storage tier's batches: reads of a file and of the swap file inside their batches, and
// the write-back and spill batches of their own (category "storage").
TEST(Trace, StorageBatchesAreTraced) {
  umrt_shutdown();
  char path[] = "/tmp/umrt-trace-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  char file[] = "/tmp/umrt-trace-file-XXXXXX";
  int ffd = mkstemp(file);
  ASSERT_GE(ffd, 0);
  std::vector<uint8_t> bytes(4 * MiB, 7);
  ASSERT_EQ(pwrite(ffd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  close(ffd);
  {
    ScopedEnv env("UMRT_TRACE", path);
    umrt_config cfg{};
    cfg.backend = UMRT_BACKEND_SIM;
    cfg.device_memory = 64 * MiB;
    cfg.host_memory = 8 * MiB;
    umrt_status st = umrt_init(&cfg);
    if (st == UMRT_ERROR_NOT_SUPPORTED) {
      unlink(path);
      unlink(file);
      GTEST_SKIP() << "userfaultfd unavailable: " << last_error();
    }
    ASSERT_EQ(st, UMRT_SUCCESS) << last_error();
    void *p = nullptr;
    ASSERT_EQ(umrt_map_file(file, 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE, &p), UMRT_SUCCESS) << last_error();
    std::memset(p, 1, 4 * MiB);  // read from the file, then written
    ASSERT_EQ(umrt_flush(p, 4 * MiB), UMRT_SUCCESS) << last_error();
    Managed m(24 * MiB);  // 3x the budget: to the swap file and back
    ASSERT_TRUE(m);
    fill_pattern(m.get(), m.bytes(), 3);
    EXPECT_TRUE(check_pattern(m.get(), m.bytes(), 3));
    m = Managed();
    ASSERT_EQ(umrt_free(p), UMRT_SUCCESS);
    ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS);
  }
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string t = ss.str();
  unlink(path);
  unlink(file);
  for (const char *name : {"read file", "write-back", "spill to swap", "read swap"})
    EXPECT_GE(count_of(t, std::string("\"name\":\"") + name + "\""), 1u) << name;
  EXPECT_NE(t.find("\"cat\":\"storage\""), std::string::npos);
}

TEST(Trace, UnwritableTraceFileIsRefused) {
  umrt_shutdown();
  ScopedEnv env("UMRT_TRACE", "/nonexistent-dir/trace.json");
  umrt_config cfg{};
  cfg.backend = UMRT_BACKEND_SIM;
  umrt_status st = umrt_init(&cfg);
  if (st == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd unavailable: " << last_error();
  EXPECT_EQ(st, UMRT_ERROR_INVALID_VALUE) << str(st);
  EXPECT_NE(std::string(last_error()).find("UMRT_TRACE"), std::string::npos) << last_error();
  umrt_shutdown();
}

}  // namespace
