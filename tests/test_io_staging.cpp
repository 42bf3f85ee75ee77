// test_io_staging.cpp — the I/O staging buffer registered with the device (storage/io_staging.h):
// file and swap pages go to the device by a DMA straight from the staging they were read into
// (the sim counts bytes copied from registered memory and refuses a "pinned" copy from memory
// that is not registered), and every registration ends: with its thread, and at shutdown, and a
// thread that registered under one runtime registers again under the next.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "backend.h"
#include "temp_file.h"
#include "test_util.h"

namespace {

using namespace umrt_test;
using umrt::rt::sim_pinned_bytes;
using umrt::rt::sim_pins_live;

class IoStaging : public FileRangeTest {
 protected:
  bool TestBackend(Backend *b, std::string *) const override {
    *b = Backend::sim;  // the sim's registrations are what is checked here
    return true;
  }
  void Configure(umrt_config &cfg) override {
    cfg.host_memory = 16 * MiB;  // for the swap case; the file cases stay under it
    cfg.device_memory = 64 * MiB;
  }
};

TEST_F(IoStaging, FilePagesGoToTheDeviceStraightFromTheStaging) {
  const size_t bytes = 6 * MiB + 3 * kPage;
  TempFile f(bytes, 71);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  const uint64_t before = sim_pinned_bytes();
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(sim_pinned_bytes() - before, bytes) << "file pages were copied through the backend's own staging";
  std::vector<uint8_t> d;
  ASSERT_TRUE(read_device_copy(p, bytes, &d));
  EXPECT_EQ(std::memcmp(d.data(), f.data(), bytes), 0) << "the device copy is not the file";
  EXPECT_GE(sim_pins_live(), 1) << "no staging registered while the runtime runs";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

TEST_F(IoStaging, SwappedPagesGoToTheDeviceStraightFromTheStaging) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(p, bytes, 72);
  const size_t swapped = count_pages_at(p, bytes, UMRT_LOCATION_STORAGE);
  ASSERT_GT(swapped, 0u) << "nothing in the swap file";
  const uint64_t before = sim_pinned_bytes();
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  // At least the pages that were in the swap file then (the reclaim may have pushed out more).
  EXPECT_GE(sim_pinned_bytes() - before, swapped * kPage);
  EXPECT_TRUE(check_device_pattern(p, bytes, 72));
  EXPECT_TRUE(check_pattern(p, bytes, 72));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A thread's registration ends with the thread; at shutdown none is left; under a new runtime
// the same thread (same staging buffer) registers again, with the new backend.
TEST_F(IoStaging, RegistrationsEndWithTheirThreadAndWithTheRuntime) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 73);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  MAP_OR_SKIP(q, f.path(), 0, 0);
  const int64_t live0 = sim_pins_live();
  std::mutex m;
  std::condition_variable cv;
  bool prefetched = false, may_exit = false;
  umrt_status st = UMRT_ERROR_INVALID_VALUE;
  std::thread t([&] {
    st = umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr);
    std::unique_lock lk(m);
    prefetched = true;
    cv.notify_all();
    cv.wait(lk, [&] { return may_exit; });
  });
  {
    std::unique_lock lk(m);
    cv.wait(lk, [&] { return prefetched; });
  }
  EXPECT_EQ(st, UMRT_SUCCESS) << last_error();
  EXPECT_EQ(sim_pins_live(), live0 + 1) << "the thread's staging is not registered";
  {
    std::lock_guard g(m);
    may_exit = true;
  }
  cv.notify_all();
  t.join();
  EXPECT_EQ(sim_pins_live(), live0) << "the thread is gone, its staging still registered";
  std::vector<uint8_t> d;
  ASSERT_TRUE(read_device_copy(p, bytes, &d));
  EXPECT_EQ(std::memcmp(d.data(), f.data(), bytes), 0);

  // This thread registers its own, then shutdown undoes every one.
  ASSERT_EQ(umrt_prefetch(q, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_GE(sim_pins_live(), 1);
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_free(q), UMRT_SUCCESS) << last_error();
  umrt_shutdown();
  initialised_ = false;
  EXPECT_EQ(sim_pins_live(), 0) << "registrations outlived their runtime";

  // A new runtime: this thread's buffer (registered with the old backend) registers with the new
  // one; a pinned copy from unregistered memory would fail the prefetch.
  ASSERT_EQ(umrt_init(&cfg_), UMRT_SUCCESS) << last_error();
  initialised_ = true;
  MAP_OR_SKIP(r, f.path(), 0, 0);
  const uint64_t before = sim_pinned_bytes();
  ASSERT_EQ(umrt_prefetch(r, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(sim_pinned_bytes() - before, bytes);
  ASSERT_TRUE(read_device_copy(r, bytes, &d));
  EXPECT_EQ(std::memcmp(d.data(), f.data(), bytes), 0);
  EXPECT_EQ(umrt_free(r), UMRT_SUCCESS) << last_error();
}

}  // namespace
