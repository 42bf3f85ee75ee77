// test_ring.cpp — the storage tier's io_uring layer (runtime/storage/ring.*) on a real file: runs
// of reads and writes in one submission, more ops than the ring holds, and every way an op comes
// back short (short transfers, EAGAIN, EIO, end of file), injected; O_DIRECT where the file
// system takes it (the disk), buffered otherwise.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "storage/ring.h"

namespace {

using namespace umrt::rt;

constexpr size_t kPage = 4096;

// Page-aligned bytes (O_DIRECT).
struct Buf {
  explicit Buf(size_t n) : n(n) {
    if (posix_memalign(&p, kPage, n)) p = nullptr;
  }
  ~Buf() { free(p); }
  char *get() const { return static_cast<char *>(p); }
  void *p = nullptr;
  size_t n;
};

void pattern(char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<char>((i * 131 + seed * 7 + (i >> 12)) & 0xff);
}

class RingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int rc = ring.init(8);  // small: several submissions for longer runs
    if (rc == -ENOSYS || rc == -EPERM) GTEST_SKIP() << "io_uring refused here: " << strerror(-rc);
    ASSERT_EQ(rc, 0) << strerror(-rc);
    const char *tmp = std::getenv("TMPDIR");
    path = std::string(tmp && *tmp ? tmp : "/tmp") + "/umrt-ring-XXXXXX";
    int fd = mkstemp(path.data());
    ASSERT_GE(fd, 0) << strerror(errno);
    close(fd);
    fd_ = open_for_io(path.c_str(), true, &direct);
    ASSERT_GE(fd_, 0) << strerror(-fd_);
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
    if (!path.empty()) unlink(path.c_str());
  }
  // Writes `pages` pages of pattern seed at page offsets off[i] (one op each), in one run.
  int write_pages(const std::vector<uint64_t> &off, size_t pages, unsigned seed, std::vector<IoOp> *ops_out = nullptr) {
    bufs.clear();
    std::vector<IoOp> ops;
    for (uint64_t o : off) {
      bufs.emplace_back(std::make_unique<Buf>(pages * kPage));
      pattern(bufs.back()->get(), pages * kPage, seed + static_cast<unsigned>(o));
      IoOp op;
      op.fd = fd_;
      op.write = true;
      op.buf = bufs.back()->get();
      op.len = pages * kPage;
      op.off = o * kPage;
      ops.push_back(op);
    }
    int rc = ring.run(ops.data(), ops.size());
    if (ops_out) *ops_out = ops;
    return rc;
  }
  ::testing::AssertionResult read_back(uint64_t page_off, size_t pages, unsigned seed) {
    Buf b(pages * kPage), want(pages * kPage);
    pattern(want.get(), pages * kPage, seed);
    if (pread(fd_, b.get(), pages * kPage, static_cast<off_t>(page_off * kPage)) != static_cast<ssize_t>(pages * kPage))
      return ::testing::AssertionFailure() << "pread: " << strerror(errno);
    if (std::memcmp(b.get(), want.get(), pages * kPage))
      return ::testing::AssertionFailure() << "page " << page_off << ": bytes differ";
    return ::testing::AssertionSuccess();
  }
  Ring ring;
  std::string path;
  int fd_ = -1;
  bool direct = false;
  std::vector<std::unique_ptr<Buf>> bufs;
};

TEST_F(RingTest, TheDiskTakesODirect) {
  if (!direct) GTEST_SKIP() << path << ": this file system refuses O_DIRECT (buffered I/O is used)";
  EXPECT_NE(fcntl(fd_, F_GETFL) & O_DIRECT, 0);
}

// A file that ends off a page (and off 512 bytes): the read stops there, -ENODATA with every
// byte before the end (not an unaligned O_DIRECT read past it, which some file systems refuse).
TEST_F(RingTest, ReadPastAnUnalignedEnd) {
  ASSERT_EQ(write_pages({0}, 3, 11), 0);
  ASSERT_EQ(ftruncate(fd_, static_cast<off_t>(2 * kPage + 100)), 0);
  Buf b(4 * kPage);
  IoOp op;
  op.fd = fd_;
  op.buf = b.get();
  op.len = 4 * kPage;
  EXPECT_EQ(ring.run(&op, 1), -ENODATA);
  EXPECT_EQ(op.done, 2 * kPage + 100);
  Buf want(3 * kPage);
  pattern(want.get(), 3 * kPage, 11);
  EXPECT_EQ(std::memcmp(b.get(), want.get(), 2 * kPage + 100), 0);
}

// A submission the ring refuses: the ops fail (none is left half done in the kernel), the ring is
// dropped, and the thread's next Ring::mine() has a working one again.
TEST(RingMine, ARefusedSubmissionDropsTheRingAndTheNextOneWorks) {
  int err = 0;
  Ring *r = Ring::mine(&err);
  if (!r) GTEST_SKIP() << "io_uring refused here: " << strerror(-err);
  Buf b(kPage);
  std::memset(b.get(), 7, kPage);
  char name[] = "/tmp/umrt-ring-XXXXXX";
  int fd = mkstemp(name);
  ASSERT_GE(fd, 0);
  unlink(name);
  IoOp w;
  w.fd = fd;
  w.write = true;
  w.buf = b.get();
  w.len = kPage;
  r->inject(IoInject::submit, 1);
  EXPECT_EQ(r->run(&w, 1), -ENOMEM);
  EXPECT_EQ(w.status, -ENOMEM);
  EXPECT_FALSE(r->ok());
  Ring *again = Ring::mine(&err);
  ASSERT_NE(again, nullptr) << strerror(-err);
  EXPECT_TRUE(again->ok());
  EXPECT_EQ(again->run(&w, 1), 0);
  close(fd);
}

TEST_F(RingTest, WritesThenReadsWholeRunsInOneSubmission) {
  const std::vector<uint64_t> off = {0, 40, 8, 100, 64, 24, 200, 16};  // 8 ops: one ring's worth
  ASSERT_EQ(write_pages(off, 4, 1), 0);
  EXPECT_EQ(ring.submits(), 1u) << "one batch, one io_uring_submit";
  for (uint64_t o : off) EXPECT_TRUE(read_back(o, 4, 1 + static_cast<unsigned>(o)));
  std::vector<std::unique_ptr<Buf>> rb;
  std::vector<IoOp> ops;
  for (uint64_t o : off) {
    rb.emplace_back(std::make_unique<Buf>(4 * kPage));
    IoOp op;
    op.fd = fd_;
    op.buf = rb.back()->get();
    op.len = 4 * kPage;
    op.off = o * kPage;
    ops.push_back(op);
  }
  ASSERT_EQ(ring.run(ops.data(), ops.size()), 0);
  EXPECT_EQ(ring.submits(), 2u);
  for (size_t i = 0; i < off.size(); ++i) {
    Buf want(4 * kPage);
    pattern(want.get(), 4 * kPage, 1 + static_cast<unsigned>(off[i]));
    EXPECT_EQ(ops[i].done, 4 * kPage);
    EXPECT_EQ(std::memcmp(rb[i]->get(), want.get(), 4 * kPage), 0) << "op " << i;
  }
}

TEST_F(RingTest, MoreOpsThanTheRingHolds) {
  std::vector<uint64_t> off;
  for (uint64_t i = 0; i < 100; ++i) off.push_back(i * 3);
  ASSERT_EQ(write_pages(off, 1, 2), 0);
  EXPECT_GE(ring.submits(), 13u) << "100 ops through 8 entries";
  for (uint64_t o : off) EXPECT_TRUE(read_back(o, 1, 2 + static_cast<unsigned>(o)));
}

TEST_F(RingTest, ShortTransfersAreCompleted) {
  ring.inject(IoInject::short_io, 1, UINT64_MAX);  // every submission moves half of what is left
  ASSERT_EQ(write_pages({0, 32}, 16, 3), 0);
  EXPECT_GT(ring.submits(), 2u);
  EXPECT_TRUE(read_back(0, 16, 3));
  EXPECT_TRUE(read_back(32, 16, 35));
}

TEST_F(RingTest, EagainIsRetried) {
  ring.inject(IoInject::eagain, 2, 5);
  ASSERT_EQ(write_pages({0, 8, 16}, 2, 4), 0);
  for (uint64_t o : {0, 8, 16}) EXPECT_TRUE(read_back(o, 2, 4 + static_cast<unsigned>(o)));
}

TEST_F(RingTest, EagainForeverFailsTheOpNotTheOthers) {
  ASSERT_EQ(write_pages({0, 8}, 1, 5), 0);
  ring.inject(IoInject::eagain, 2, UINT64_MAX);  // the second op and every retry of it
  std::vector<IoOp> ops;
  EXPECT_EQ(write_pages({0, 8}, 1, 6, &ops), -EAGAIN);
  EXPECT_EQ(ops[0].status, 0);
  EXPECT_EQ(ops[1].status, -EAGAIN);
  EXPECT_TRUE(read_back(0, 1, 6));
  EXPECT_TRUE(read_back(8, 1, 13)) << "the failed write changed the file";
}

TEST_F(RingTest, EioIsTheFailingOpsOwn) {
  ring.inject(IoInject::eio, 2);
  std::vector<IoOp> ops;
  EXPECT_EQ(write_pages({0, 8, 16}, 1, 7, &ops), -EIO);
  EXPECT_EQ(ops[0].status, 0);
  EXPECT_EQ(ops[1].status, -EIO);
  EXPECT_EQ(ops[1].done, 0u);
  EXPECT_EQ(ops[2].status, 0);
  EXPECT_TRUE(read_back(0, 1, 7));
  EXPECT_TRUE(read_back(16, 1, 23));
  ASSERT_EQ(write_pages({8}, 1, 7), 0) << "the ring works after a failed op";
  EXPECT_TRUE(read_back(8, 1, 15));
}

// Registered (fixed) buffers: ops inside them go as read/write_fixed, with the same bytes; an
// op whose buffer lies outside its registered one fails alone (the kernel checks the range).
TEST_F(RingTest, RegisteredBuffers) {
  Buf staging(16 * kPage);
  void *base = staging.get();
  size_t len = 16 * kPage;
  ASSERT_EQ(ring.register_buffers(&base, &len, 1), 0);
  EXPECT_TRUE(ring.has_buffers());
  pattern(staging.get(), 16 * kPage, 10);
  IoOp w[2];
  for (int k = 0; k < 2; ++k) {
    w[k].fd = fd_;
    w[k].write = true;
    w[k].buf = staging.get() + k * 8 * kPage;
    w[k].buf_index = 0;
    w[k].len = 8 * kPage;
    w[k].off = (k * 40) * kPage;
  }
  ASSERT_EQ(ring.run(w, 2), 0);
  Buf want(16 * kPage);
  pattern(want.get(), 16 * kPage, 10);
  std::memset(staging.get(), 0, 16 * kPage);
  IoOp r[2] = {w[0], w[1]};
  r[0].write = r[1].write = false;
  ASSERT_EQ(ring.run(r, 2), 0);
  EXPECT_EQ(std::memcmp(staging.get(), want.get(), 16 * kPage), 0);
  Buf outside(kPage);
  IoOp bad = r[0];
  bad.buf = outside.get();  // not inside buffer 0
  bad.len = kPage;
  IoOp good = r[1];
  IoOp two[2] = {bad, good};
  EXPECT_EQ(ring.run(two, 2), -EFAULT);
  EXPECT_EQ(two[0].status, -EFAULT);
  EXPECT_EQ(two[1].status, 0);
}

TEST_F(RingTest, ReadPastTheEndIsNoDataWithTheBytesBefore) {
  ASSERT_EQ(write_pages({0}, 3, 8), 0);  // the file is 3 pages
  Buf b(8 * kPage);
  std::memset(b.get(), 0x55, 8 * kPage);
  IoOp op;
  op.fd = fd_;
  op.buf = b.get();
  op.len = 8 * kPage;
  op.off = 0;
  EXPECT_EQ(ring.run(&op, 1), -ENODATA);
  EXPECT_EQ(op.status, -ENODATA);
  EXPECT_EQ(op.done, 3 * kPage);
  Buf want(3 * kPage);
  pattern(want.get(), 3 * kPage, 8);
  EXPECT_EQ(std::memcmp(b.get(), want.get(), 3 * kPage), 0);
}

// Buffered I/O (a file system without O_DIRECT, here asked for) and tmpfs (O_DIRECT since Linux
// 6.6, buffered before): the same bytes either way.
TEST(RingOpen, BufferedAndTmpfsWork) {
  if (access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no writable /dev/shm here";
  Ring ring;
  int rc = ring.init();
  if (rc == -ENOSYS || rc == -EPERM) GTEST_SKIP() << "io_uring refused here: " << strerror(-rc);
  ASSERT_EQ(rc, 0);
  for (bool try_direct : {false, true}) {
    SCOPED_TRACE(try_direct ? "O_DIRECT where taken" : "buffered");
    std::string path = "/dev/shm/umrt-ring-XXXXXX";
    int fd = mkstemp(path.data());
    ASSERT_GE(fd, 0);
    close(fd);
    bool direct = true;
    fd = open_for_io(path.c_str(), true, &direct, try_direct);
    ASSERT_GE(fd, 0) << strerror(-fd);
    if (!try_direct) {
      EXPECT_FALSE(direct);
    }
    EXPECT_EQ(fcntl(fd, F_GETFL) & O_DIRECT, direct ? O_DIRECT : 0) << "*direct says what the fd is";
    Buf b(2 * kPage), r(2 * kPage);
    pattern(b.get(), 2 * kPage, 9);
    IoOp w;
    w.fd = fd;
    w.write = true;
    w.buf = b.get();
    w.len = 2 * kPage;
    ASSERT_EQ(ring.run(&w, 1), 0);
    IoOp rd;
    rd.fd = fd;
    rd.buf = r.get();
    rd.len = 2 * kPage;
    ASSERT_EQ(ring.run(&rd, 1), 0);
    EXPECT_EQ(std::memcmp(b.get(), r.get(), 2 * kPage), 0);
    close(fd);
    unlink(path.c_str());
  }
}

TEST(RingOpen, MissingFileIsEnoent) {
  bool direct;
  EXPECT_EQ(open_for_io("/nonexistent/umrt-ring", false, &direct), -ENOENT);
}

TEST(RingMine, OnePerThreadAndKept) {
  int err = 0;
  Ring *a = Ring::mine(&err);
  if (!a) GTEST_SKIP() << "io_uring refused here: " << strerror(-err);
  EXPECT_EQ(Ring::mine(&err), a);
  Ring *other = nullptr;
  std::thread([&] { other = Ring::mine(&err); }).join();
  EXPECT_NE(other, nullptr);
  EXPECT_NE(other, a);
}

}  // namespace
