// test_staging.cpp — the cuda backend's staging pipeline (runtime/backends/staging.*) on the CPU,
// against a fake device whose streams really are asynchronous: an enqueued copy or memset only
// happens when an event recorded after it is waited for, in stream order. So a pipeline that read
// a staging slot before its DMA completed, reused a slot too early, or installed device->host
// bytes before waiting, produces wrong data here. Also: errors (at enqueue and at completion)
// fail exactly their op with the device's text; injected failures; small transfers stay on the
// submitting thread; many concurrent transfers.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>

#include "backends/staging.h"

namespace {

using namespace umrt::rt;

constexpr size_t kSlot = 64 * 1024;  // small slots: many pieces per op
constexpr int kLateError = 71;        // an error the fake device reports when the work completes
constexpr int kEnqueueError = 72;     // an error it reports when the work is enqueued

struct FakeStream {
  std::mutex m;
  std::deque<std::function<int()>> work;  // not yet executed, in stream order
  size_t executed = 0;                    // items executed so far
};

struct FakeEvent {
  FakeStream *stream = nullptr;
  size_t upto = 0;  // the stream items (executed + queued) recorded before it
};

// A device whose work runs only when waited for. `fail_nth_late` / `fail_nth_enqueue`: the nth
// device operation (counted from 1 over the whole device) fails at completion / at enqueue.
class FakeDma final : public DmaOps {
 public:
  explicit FakeDma(size_t dev_bytes) : dev(dev_bytes, 0) {}
  std::vector<uint8_t> dev;
  std::mutex m;
  uint64_t ops = 0, fail_nth_late = 0, fail_nth_enqueue = 0;
  std::vector<std::string> reports;
  std::set<std::thread::id> enqueuers;  // threads that enqueued device work
  std::vector<const void *> h2d_sources; // where each host->device DMA read from

  void bind_thread() override {}
  int h2d(void *d, const void *staged, size_t len, void *stream) override {
    {
      std::lock_guard g(m);
      h2d_sources.push_back(staged);
    }
    return enqueue(stream, [=] { std::memcpy(d, staged, len); });
  }
  int d2h(void *staged, const void *d, size_t len, void *stream) override {
    return enqueue(stream, [=] { std::memcpy(staged, d, len); });
  }
  int zero(void *d, size_t len, void *stream) override {
    return enqueue(stream, [=] { std::memset(d, 0, len); });
  }
  int record(void *event, void *stream) override {
    auto *ev = static_cast<FakeEvent *>(event);
    auto *st = static_cast<FakeStream *>(stream);
    std::lock_guard g(st->m);
    ev->stream = st;
    ev->upto = st->executed + st->work.size();
    return 0;
  }
  int wait(void *event) override {
    auto *ev = static_cast<FakeEvent *>(event);
    FakeStream *st = ev->stream;
    std::lock_guard g(st->m);
    int err = 0;
    while (st->executed < ev->upto) {
      int e = st->work.front()();
      st->work.pop_front();
      ++st->executed;
      if (e && !err) err = e;
    }
    return err;
  }
  const char *text(int err) override {
    return err == kLateError ? "fake: late failure" : err == kEnqueueError ? "fake: enqueue failure" : "fake: ?";
  }
  void report(const char *msg) override {
    std::lock_guard g(m);
    reports.emplace_back(msg);
  }

 private:
  int enqueue(void *stream, std::function<void()> fn) {
    auto *st = static_cast<FakeStream *>(stream);
    uint64_t n;
    {
      std::lock_guard g(m);
      n = ++ops;
      enqueuers.insert(std::this_thread::get_id());
    }
    if (n == fail_nth_enqueue) return kEnqueueError;
    const bool late = n == fail_nth_late;
    std::lock_guard g(st->m);
    st->work.push_back([fn, late] {
      if (late) return kLateError;  // the work does not happen
      fn();
      return 0;
    });
    return 0;
  }
};

// Lanes backed by plain host memory: `nlanes` lanes of `nslots` slots.
struct FakeLanes {
  std::vector<std::unique_ptr<StagingLane>> lanes;
  std::vector<std::unique_ptr<FakeStream>> streams;
  std::vector<std::unique_ptr<FakeEvent>> events;
  std::vector<std::vector<uint8_t>> bufs;
  FakeLanes(unsigned nlanes, unsigned nslots) {
    for (unsigned i = 0; i < nlanes; ++i) {
      auto l = std::make_unique<StagingLane>();
      streams.push_back(std::make_unique<FakeStream>());
      l->stream = streams.back().get();
      l->slots.resize(nslots);
      for (StagingSlot &s : l->slots) {
        bufs.emplace_back(kSlot, 0xEE);
        s.buf = bufs.back().data();
        events.push_back(std::make_unique<FakeEvent>());
        s.event = events.back().get();
      }
      lanes.push_back(std::move(l));
    }
  }
  std::vector<StagingLane *> ptrs() {
    std::vector<StagingLane *> v;
    for (auto &l : lanes) v.push_back(l.get());
    return v;
  }
};

// Installs device->host pieces by memcpy (what UFFDIO_COPY does to the bytes).
struct MemcpyInstaller final : Installer {
  std::atomic<size_t> calls{0};
  int install(CopyOp &op, const void *staged) override {
    std::memcpy(op.host, staged, op.len);
    op.done = op.len;
    ++calls;
    return 0;
  }
};

void fill(std::vector<uint8_t> &v, uint32_t seed) {
  std::mt19937 g(seed);
  for (auto &b : v) b = static_cast<uint8_t>(g());
}

// Ops over [0, bytes) in runs of irregular lengths (multiples of 4 KiB, up to ~5 slots).
std::vector<CopyOp> ops_over(CopyOp::Dir dir, uint8_t *host, uint8_t *dev, size_t bytes, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<CopyOp> ops;
  for (size_t off = 0; off < bytes;) {
    size_t len = std::min(bytes - off, size_t{4096} * (1 + g() % 80));
    ops.push_back({dir, host + off, dev + off, len, 0, 0});
    off += len;
  }
  return ops;
}

struct Fixture {
  FakeDma dma;
  FakeLanes lanes;
  StagingPipeline pipe;
  Injector inject;
  // engines + spares lanes, and the urgent lane.
  Fixture(size_t dev_bytes, unsigned engines, unsigned spares, unsigned slots)
      : dma(dev_bytes), lanes(engines + spares + 1, slots), pipe(dma, kSlot, lanes.ptrs(), engines) {}
};

TEST(Staging, HostToDeviceIsExactAndWaitsBeforeReusingSlots) {
  const size_t bytes = 3 * 1024 * 1024 + 4096 * 7;
  Fixture f(bytes, 2, 2, 3);
  std::vector<uint8_t> host(bytes);
  fill(host, 1);
  auto ops = ops_over(CopyOp::H2D, host.data(), f.dma.dev.data(), bytes, 2);
  ASSERT_EQ(f.pipe.transfer(ops.data(), ops.size(), nullptr, f.inject), 0);
  for (const CopyOp &op : ops) EXPECT_EQ(op.status, 0);
  EXPECT_TRUE(f.dma.dev == host) << "the device copy differs: a slot was reused before its DMA ran";
  EXPECT_TRUE(f.dma.reports.empty());
}

// Pinned ops (memory registered with the device): the DMA reads the op's own memory, never a slot
// (and the transfer still returns only once every DMA has run: the fake runs work when waited).
TEST(Staging, PinnedHostToDeviceDmasFromTheSourceItself) {
  const size_t bytes = 1024 * 1024 + 4096 * 5;
  Fixture f(bytes, 1, 2, 3);
  std::vector<uint8_t> host(bytes);
  fill(host, 9);
  auto ops = ops_over(CopyOp::H2D, host.data(), f.dma.dev.data(), bytes, 3);
  for (CopyOp &op : ops) op.pinned = true;
  ASSERT_EQ(f.pipe.transfer(ops.data(), ops.size(), nullptr, f.inject), 0);
  EXPECT_TRUE(f.dma.dev == host) << "the device copy differs";
  ASSERT_FALSE(f.dma.h2d_sources.empty());
  for (const void *src : f.dma.h2d_sources)
    EXPECT_TRUE(src >= host.data() && src < host.data() + bytes) << "a pinned op went through a staging slot";
}

TEST(Staging, DeviceToHostInstallsOnlyCompletedDma) {
  const size_t bytes = 2 * 1024 * 1024 + 4096 * 3;
  Fixture f(bytes, 2, 1, 4);
  fill(f.dma.dev, 3);
  std::vector<uint8_t> host(bytes, 0);
  auto ops = ops_over(CopyOp::D2H, host.data(), f.dma.dev.data(), bytes, 4);
  MemcpyInstaller inst;
  ASSERT_EQ(f.pipe.transfer(ops.data(), ops.size(), &inst, f.inject), 0);
  for (const CopyOp &op : ops) {
    EXPECT_EQ(op.status, 0);
    EXPECT_EQ(op.done, op.len) << "installed bytes of an op add up over its pieces";
  }
  EXPECT_TRUE(host == f.dma.dev) << "installed bytes differ: a slot was installed before its DMA completed";
  size_t pieces = 0;
  for (const CopyOp &op : ops) pieces += (op.len + kSlot - 1) / kSlot;
  EXPECT_EQ(inst.calls.load(), pieces);
}

TEST(Staging, ZeroFillUsesNoStaging) {
  const size_t bytes = 1024 * 1024;
  Fixture f(bytes, 1, 1, 2);
  fill(f.dma.dev, 5);
  CopyOp op{CopyOp::ZERO, nullptr, f.dma.dev.data(), bytes, 0, 0};
  ASSERT_EQ(f.pipe.transfer(&op, 1, nullptr, f.inject), 0);
  EXPECT_EQ(std::count(f.dma.dev.begin(), f.dma.dev.end(), 0), static_cast<long>(bytes));
}

// A device error when the work completes fails that op only, with the device's text.
TEST(Staging, LateErrorFailsItsOpOnly) {
  const size_t bytes = 1024 * 1024;
  Fixture f(bytes, 2, 1, 2);
  std::vector<uint8_t> host(bytes);
  fill(host, 6);
  std::vector<CopyOp> ops;
  for (size_t off = 0; off < bytes; off += kSlot) ops.push_back({CopyOp::H2D, host.data() + off, f.dma.dev.data() + off, kSlot, 0, 0});
  f.dma.fail_nth_late = 5;  // one piece = one op here
  EXPECT_EQ(f.pipe.transfer(ops.data(), ops.size(), nullptr, f.inject), -EIO);
  int failed = 0;
  for (const CopyOp &op : ops) failed += op.status == -EIO;
  EXPECT_EQ(failed, 1);
  ASSERT_EQ(f.dma.reports.size(), 1u);
  EXPECT_NE(f.dma.reports[0].find("fake: late failure"), std::string::npos) << f.dma.reports[0];
  for (const CopyOp &op : ops)
    if (op.status == 0) {
      size_t off = static_cast<uint8_t *>(op.dev) - f.dma.dev.data();
      EXPECT_EQ(0, std::memcmp(op.dev, host.data() + off, op.len)) << "a successful op's bytes";
    }
}

// An error at enqueue (the device refuses the copy) fails the op the same way, and the lane
// goes on with the next pieces.
TEST(Staging, EnqueueErrorFailsItsOp) {
  const size_t bytes = 8 * kSlot;
  Fixture f(bytes, 1, 1, 2);
  fill(f.dma.dev, 7);
  std::vector<uint8_t> host(bytes, 0);
  CopyOp op{CopyOp::D2H, host.data(), f.dma.dev.data(), bytes, 0, 0};
  MemcpyInstaller inst;
  f.dma.fail_nth_enqueue = 3;
  EXPECT_EQ(f.pipe.transfer(&op, 1, &inst, f.inject), -EIO);
  EXPECT_EQ(op.status, -EIO);
  EXPECT_EQ(op.done, bytes - kSlot) << "the other pieces were installed";
  EXPECT_EQ(inst.calls.load(), 7u);
  ASSERT_FALSE(f.dma.reports.empty());
  EXPECT_NE(f.dma.reports[0].find("fake: enqueue failure"), std::string::npos);
}

TEST(Staging, InjectedFailureReportsOnce) {
  const size_t bytes = 6 * kSlot;
  Fixture f(bytes, 1, 1, 2);
  std::vector<uint8_t> host(bytes, 1);
  CopyOp ops[2] = {{CopyOp::H2D, host.data(), f.dma.dev.data(), 3 * kSlot, 0, 0},
                   {CopyOp::H2D, host.data() + 3 * kSlot, f.dma.dev.data() + 3 * kSlot, 3 * kSlot, 0, 0}};
  f.inject.arm(2, 1);
  EXPECT_EQ(f.pipe.transfer(ops, 2, nullptr, f.inject), -EIO);
  EXPECT_EQ(ops[0].status, 0);
  EXPECT_EQ(ops[1].status, -EIO);
  ASSERT_EQ(f.dma.reports.size(), 1u);
  EXPECT_NE(f.dma.reports[0].find("fault injection"), std::string::npos);
  EXPECT_EQ(std::count(f.dma.dev.begin() + 3 * kSlot, f.dma.dev.end(), 0), static_cast<long>(3 * kSlot))
      << "an injected failure moves nothing";
}

// A host->device source the application unmapped (or protected) under the copy: that op fails
// with -EFAULT and says so in words, no DMA is issued from the slot, the other op goes through.
TEST(Staging, UnreadableSourceFailsItsOpWithEfault) {
  const size_t bytes = 2 * kSlot;
  Fixture f(bytes, 1, 1, 2);
  std::vector<uint8_t> host(kSlot, 4);
  void *gone = mmap(nullptr, kSlot, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(gone, MAP_FAILED);
  CopyOp ops[2] = {{CopyOp::H2D, gone, f.dma.dev.data(), kSlot, 0, 0},
                   {CopyOp::H2D, host.data(), f.dma.dev.data() + kSlot, kSlot, 0, 0}};
  EXPECT_EQ(f.pipe.transfer(ops, 2, nullptr, f.inject), -EFAULT);
  EXPECT_EQ(ops[0].status, -EFAULT);
  EXPECT_EQ(ops[1].status, 0);
  ASSERT_EQ(f.dma.reports.size(), 1u);
  EXPECT_NE(f.dma.reports[0].find("could not be read"), std::string::npos) << f.dma.reports[0];
  EXPECT_EQ(std::count(f.dma.dev.begin(), f.dma.dev.begin() + kSlot, 0), static_cast<long>(kSlot))
      << "bytes of an unreadable source reached the device";
  munmap(gone, kSlot);
}

// A transfer of at most one ring of pieces runs on the submitting thread when it gets a lane.
TEST(Staging, SmallTransferStaysOnTheCaller) {
  Fixture f(4 * kSlot, 2, 1, 4);
  std::vector<uint8_t> host(4 * kSlot, 9);
  CopyOp op{CopyOp::H2D, host.data(), f.dma.dev.data(), 4 * kSlot, 0, 0};
  ASSERT_EQ(f.pipe.transfer(&op, 1, nullptr, f.inject), 0);
  EXPECT_EQ(f.dma.enqueuers, std::set<std::thread::id>{std::this_thread::get_id()});
  EXPECT_TRUE(f.dma.dev == host);
}

// An urgent transfer (the fault service's) runs every piece on the caller, in its own lane,
// however many pieces it has and whatever the other lanes do: it never waits behind pieces of
// other transfers.
TEST(Staging, UrgentTransferNeverLeavesTheCaller) {
  const size_t bytes = 11 * kSlot + 4096 * 3;
  Fixture f(bytes, 2, 0, 2);  // no spare lane at all for ordinary callers
  fill(f.dma.dev, 11);
  std::vector<uint8_t> host(bytes, 0);
  auto ops = ops_over(CopyOp::D2H, host.data(), f.dma.dev.data(), bytes, 12);
  MemcpyInstaller inst;
  ASSERT_EQ(f.pipe.transfer(ops.data(), ops.size(), &inst, f.inject, true), 0);
  EXPECT_EQ(f.dma.enqueuers, std::set<std::thread::id>{std::this_thread::get_id()});
  EXPECT_TRUE(host == f.dma.dev);
}

// Several threads submit at once (more than the spare lanes): every byte lands.
TEST(Staging, ConcurrentTransfers) {
  const size_t per = 1024 * 1024 + 4096 * 5, nthreads = 6;
  Fixture f(per * nthreads, 2, 2, 3);
  std::vector<std::vector<uint8_t>> host(nthreads, std::vector<uint8_t>(per));
  std::vector<std::vector<uint8_t>> back(nthreads, std::vector<uint8_t>(per, 0));
  for (size_t t = 0; t < nthreads; ++t) fill(host[t], 100 + static_cast<uint32_t>(t));
  std::vector<std::thread> ts;
  std::atomic<int> errors{0};
  for (size_t t = 0; t < nthreads; ++t)
    ts.emplace_back([&, t] {
      uint8_t *dev = f.dma.dev.data() + t * per;
      auto up = ops_over(CopyOp::H2D, host[t].data(), dev, per, 200 + static_cast<uint32_t>(t));
      if (f.pipe.transfer(up.data(), up.size(), nullptr, f.inject)) ++errors;
      MemcpyInstaller inst;
      auto down = ops_over(CopyOp::D2H, back[t].data(), dev, per, 300 + static_cast<uint32_t>(t));
      if (f.pipe.transfer(down.data(), down.size(), &inst, f.inject)) ++errors;
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(errors.load(), 0);
  for (size_t t = 0; t < nthreads; ++t) EXPECT_TRUE(back[t] == host[t]) << "thread " << t;
}

}  // namespace
