// test_devmem.cpp — the device-memory manager (runtime/devmem.*) against a fake device that
// records the order of what it is asked: a chunk is never unmapped while device work that could
// touch it is still queued (on a GPU, cuMemUnmap under a running kernel is a sticky illegal
// address in the application's context), for a freed large range, the last range of a pack
// and shutdown; and a range that gives up no chunk does not wait for the device at all.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "devmem.h"

namespace {

using namespace umrt::rt;

// Device work is "queued" until device_sync(); every chunk_unmap checks none is.
class FakeDevice final : public Backend {
 public:
  int queued = 0;          // kernels the application launched and the device has not finished
  int syncs = 0;
  int unmaps = 0;
  int unmaps_under_work = 0;  // the bug: a chunk unmapped while work was queued
  std::vector<std::string> calls;

 private:
  const char *do_name() const override { return "fake"; }
  uint64_t do_capacity() const override { return 8 * kBlockSize; }
  int do_window_create(size_t bytes, DevWindow *w) override {
    w->base = reinterpret_cast<void *>(next_va_);
    w->bytes = bytes;
    next_va_ += bytes;
    return 0;
  }
  void do_window_destroy(DevWindow *) override {}
  int do_chunk_map(DevWindow *, size_t, uint32_t) override { return 0; }
  int do_chunk_unmap(DevWindow *, size_t) override {
    ++unmaps;
    if (queued) ++unmaps_under_work;
    calls.push_back("unmap");
    return 0;
  }
  void do_chunk_release(uint32_t) override {}
  int do_frames_alloc(size_t) override { return 0; }
  int do_transfer(CopyOp *, size_t, Installer *) override { return 0; }
  int do_device_sync() override {
    ++syncs;
    queued = 0;
    calls.push_back("sync");
    return 0;
  }
  int do_stream_sync(void *) override { return 0; }
  int do_inject(InjectKind, uint64_t, uint64_t) override { return 0; }
  uintptr_t next_va_ = uintptr_t{1} << 44;
};

int no_evict(void *, Range &, size_t, size_t) { return -EIO; }

class DevMemRelease : public ::testing::Test {
 protected:
  void SetUp() override { dm.init(&dev, &no_evict, nullptr, 0); }
  void TearDown() override { dm.shutdown(); }
  // A range of `pages` with its device blocks holding chunks.
  std::unique_ptr<Range> make(size_t pages, bool with_chunks = true) {
    auto r = std::make_unique<Range>();
    r->size = pages * kPageSize;
    r->npages = pages;
    r->map_bytes = r->size;
    EXPECT_EQ(r->entries.init(pages), 0);
    EXPECT_EQ(dm.setup_range(*r), 0);
    if (with_chunks)
      for (size_t p = 0; p < pages; p += kBlockPages) {
        DBlock *b = r->block_at(p);
        EXPECT_NE(b, nullptr);
        EXPECT_EQ(dm.ensure_chunk(b, 0), 0);
      }
    return r;
  }
  FakeDevice dev;
  DevMem dm;
};

TEST_F(DevMemRelease, FreeOfALargeRangeWaitsForQueuedWorkFirst) {
  auto r = make(3 * kBlockPages);
  dev.queued = 16;  // sixteen kernels queued on the range's memory
  dm.teardown_range(*r);
  EXPECT_EQ(dev.unmaps, 3);
  EXPECT_EQ(dev.unmaps_under_work, 0) << "a chunk was unmapped while device work was queued";
  ASSERT_FALSE(dev.calls.empty());
  EXPECT_EQ(dev.calls.front(), "sync") << "the device was not waited for before the first unmap";
}

TEST_F(DevMemRelease, LastRangeOfAPackWaitsOthersDoNot) {
  auto a = make(4);
  auto b = make(4, false);  // shares a's pack (and so its chunk)
  ASSERT_EQ(a->pack, b->pack);
  dev.queued = 1;
  dm.teardown_range(*a);  // the pack's chunk stays with b: nothing to wait for
  EXPECT_EQ(dev.unmaps, 0);
  EXPECT_EQ(dev.syncs, 0) << "a free that releases no chunk waited for the device";
  dm.teardown_range(*b);  // the last one: the chunk goes
  EXPECT_EQ(dev.unmaps, 1);
  EXPECT_EQ(dev.unmaps_under_work, 0);
}

TEST_F(DevMemRelease, RangeWithoutDeviceMemoryDoesNotWait) {
  auto r = make(2 * kBlockPages, false);
  dev.queued = 1;
  dm.teardown_range(*r);
  EXPECT_EQ(dev.syncs, 0);
  EXPECT_EQ(dev.unmaps, 0);
}

TEST_F(DevMemRelease, ShutdownWaitsBeforeFreeingPacks) {
  auto a = make(4);
  dev.queued = 2;
  a->pack = nullptr;  // as if its range were gone without a teardown (shutdown frees the packs)
  dm.shutdown();
  EXPECT_EQ(dev.unmaps, 1);
  EXPECT_EQ(dev.unmaps_under_work, 0);
  dm.init(&dev, &no_evict, nullptr, 0);  // TearDown shuts down again
}

}  // namespace
