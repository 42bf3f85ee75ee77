// test_entry.cpp — unit tests of the page entry (runtime/entry.h): well-formedness, the allowed
// transitions, try-lock (first locker wins) and GONE marking.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "entry.h"

namespace {

using namespace umrt::rt;
using namespace umrt::rt::entry;

const uint64_t kNone = make(Loc::NONE);
const uint64_t kHost = make(Loc::HOST);
uint64_t dev(uint64_t frame) { return make(Loc::DEVICE, frame); }

std::string hex(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

TEST(Entry, MakeAndAccessors) {
  EXPECT_EQ(loc(kNone), Loc::NONE);
  EXPECT_EQ(loc(kHost), Loc::HOST);
  EXPECT_EQ(loc(dev(7)), Loc::DEVICE);
  EXPECT_EQ(frame(dev(7)), 7u);
  EXPECT_EQ(frame(dev(MAX_FRAME)), MAX_FRAME);
  EXPECT_EQ(loc(dev(MAX_FRAME)), Loc::DEVICE);
  EXPECT_FALSE(locked(dev(7)));
  EXPECT_TRUE(locked(dev(7) | LOCKED));
  EXPECT_EQ(frame(dev(7) | LOCKED | GONE), 7u);
  // with_loc keeps GONE and nothing else.
  EXPECT_EQ(with_loc(kHost | GONE | LOCKED, Loc::DEVICE, 9), dev(9) | GONE);
  EXPECT_EQ(with_loc(dev(9) | LOCKED, Loc::HOST), kHost);
  // Flag bits are distinct and below the frame.
  const uint64_t flags[] = {LOCKED, MIGRATE, WRITE, CANCEL, GONE};
  uint64_t seen = LOC_MASK;
  for (uint64_t f : flags) {
    EXPECT_EQ(seen & f, 0u) << hex(f);
    EXPECT_EQ(f & ~FLAGS_MASK, 0u) << hex(f);
    seen |= f;
  }
  EXPECT_STREQ(loc_name(Loc::NONE), "NONE");
  EXPECT_STREQ(loc_name(Loc::HOST), "HOST");
  EXPECT_STREQ(loc_name(Loc::DEVICE), "DEVICE");
}

TEST(Entry, ValidEntries) {
  const uint64_t valid[] = {
      kNone, kHost, dev(0), dev(1), dev(12345), dev(MAX_FRAME),
      kNone | LOCKED, kHost | LOCKED, dev(3) | LOCKED,
      kHost | LOCKED | CANCEL,
      kNone | GONE, kHost | GONE, dev(3) | GONE, kHost | GONE | LOCKED | CANCEL, dev(3) | GONE | LOCKED,
      uint64_t{3}, uint64_t{3} | (uint64_t{77} << FRAME_SHIFT), uint64_t{3} | LOCKED | GONE,  // SWAP, slot 0 / 77
  };
  for (uint64_t e : valid) {
    const char *why = "not cleared";
    EXPECT_TRUE(entry_valid(e, &why)) << hex(e) << ": " << (why ? why : "");
    EXPECT_EQ(why, nullptr) << hex(e);
    EXPECT_TRUE(entry_valid(e, nullptr)) << hex(e);
  }
}

TEST(Entry, InvalidEntries) {
  const uint64_t invalid[] = {
      uint64_t{3} | DIRTY,               // DIRTY on a page in swap (anonymous ranges only)
      kHost | MIGRATE,                   // batch-only flags
      kHost | WRITE,
      dev(2) | MIGRATE | LOCKED,
      kNone | WRITE,
      kHost | (uint64_t{1} << 10),       // reserved bits
      kHost | (uint64_t{1} << 11),
      kNone | DIRTY,                     // DIRTY on a page with no data of its own
      kNone | LOCKED | DIRTY,
      kHost | FLUSH,                     // FLUSH without LOCKED
      dev(2) | FLUSH,
      dev(1) | (uint64_t{1} << 9),
      kHost | (uint64_t{5} << FRAME_SHIFT),  // frame on a page not on the device
      kNone | (uint64_t{1} << FRAME_SHIFT),
      kHost | LOCKED | (uint64_t{1} << FRAME_SHIFT),
      kHost | CANCEL,                    // CANCEL without LOCKED
      dev(4) | LOCKED | CANCEL,          // CANCEL on a page not on the host
      kNone | LOCKED | CANCEL,
  };
  for (uint64_t e : invalid) {
    const char *why = nullptr;
    EXPECT_FALSE(entry_valid(e, &why)) << hex(e);
    ASSERT_NE(why, nullptr) << hex(e);
    EXPECT_GT(std::string(why).size(), 0u) << hex(e);
    EXPECT_FALSE(entry_valid(e, nullptr)) << hex(e);
  }
}

struct Transition {
  uint64_t from, to;
  const char *name;
};

TEST(Entry, AllowedTransitions) {
  const Transition allowed[] = {
      // lock
      {kNone, kNone | LOCKED, "lock NONE"},
      {kHost, kHost | LOCKED, "lock HOST"},
      {dev(5), dev(5) | LOCKED, "lock DEVICE"},
      {kHost | GONE, kHost | GONE | LOCKED, "lock HOST|GONE"},
      {dev(5) | GONE, dev(5) | GONE | LOCKED, "lock DEVICE|GONE"},
      // unlock (CANCEL dropped)
      {kNone | LOCKED, kNone, "unlock NONE"},
      {kHost | LOCKED, kHost, "unlock HOST"},
      {dev(5) | LOCKED, dev(5), "unlock DEVICE"},
      {kHost | LOCKED | CANCEL, kHost, "unlock cancelled HOST"},
      {kHost | LOCKED | GONE, kHost | GONE, "unlock HOST|GONE"},
      // publish: a new location, unlocked, GONE kept
      {kNone | LOCKED, kHost, "publish NONE->HOST (zero-fill on host)"},
      {kNone | LOCKED, dev(8), "publish NONE->DEVICE (zero-fill on device)"},
      {kHost | LOCKED, dev(8), "publish HOST->DEVICE"},
      {dev(8) | LOCKED, kHost, "publish DEVICE->HOST"},
      {kHost | LOCKED | GONE, dev(8) | GONE, "publish HOST->DEVICE keeps GONE"},
      {dev(8) | LOCKED | GONE, kHost | GONE, "publish DEVICE->HOST keeps GONE"},
      // publish keeping the lock (the host copy is released before unlocking)
      {kHost | LOCKED, dev(3) | LOCKED, "publish HOST->DEVICE keeping the lock"},
      {dev(3) | LOCKED, kHost | LOCKED, "publish DEVICE->HOST keeping the lock"},
      // cancel
      {kHost | LOCKED, kHost | LOCKED | CANCEL, "cancel"},
      {kHost | LOCKED | GONE, kHost | LOCKED | GONE | CANCEL, "cancel GONE page"},
      // dirty tracking and write-back (writable file ranges)
      {kHost | LOCKED, kHost | LOCKED | CANCEL | DIRTY, "cancel by a write: dirty"},
      {kHost | LOCKED, kHost | LOCKED | DIRTY, "a write marks HOST dirty"},
      {dev(3) | LOCKED, dev(3) | LOCKED | DIRTY, "mark DEVICE dirty"},
      {kHost | DIRTY, kHost | DIRTY | LOCKED | FLUSH, "a write-back's lock"},
      {kHost | DIRTY | LOCKED | FLUSH, kHost, "written back: unlocked clean"},
      {dev(3) | DIRTY | LOCKED | FLUSH, dev(3) | DIRTY, "unlock keeping DIRTY"},
      {kHost | LOCKED, dev(3) | LOCKED | DIRTY, "publish to the device dirty"},
      {dev(3) | DIRTY | LOCKED, kHost | DIRTY | LOCKED, "publish home keeping DIRTY"},
      {dev(3) | DIRTY | LOCKED, kNone, "publish NONE dropping DIRTY"},
      // the host budget: anonymous pages to the swap file and back
      {kHost | LOCKED, uint64_t{3} | (uint64_t{9} << FRAME_SHIFT) | LOCKED, "publish HOST->SWAP keeping the lock"},
      {uint64_t{3} | (uint64_t{9} << FRAME_SHIFT) | LOCKED, kHost | LOCKED, "publish SWAP->HOST"},
      {uint64_t{3} | (uint64_t{9} << FRAME_SHIFT) | LOCKED, dev(4) | LOCKED, "publish SWAP->DEVICE"},
  };
  for (const Transition &t : allowed) {
    const char *why = "not cleared";
    EXPECT_TRUE(transition_allowed(t.from, t.to, &why))
        << t.name << ": " << hex(t.from) << " -> " << hex(t.to) << ": " << (why ? why : "");
    EXPECT_EQ(why, nullptr) << t.name;
    EXPECT_TRUE(transition_allowed(t.from, t.to, nullptr)) << t.name;
  }
}

TEST(Entry, DisallowedTransitions) {
  const Transition disallowed[] = {
      {kHost, dev(3), "move without lock"},
      {kNone, kHost, "NONE->HOST without lock"},
      {dev(3), kHost, "DEVICE->HOST without lock"},
      {dev(3), dev(4), "frame change without lock"},
      {kHost, kHost | LOCKED | CANCEL, "lock and cancel at once"},
      {kHost, kHost | CANCEL, "cancel an unlocked page"},
      {dev(3) | LOCKED, kHost | LOCKED | CANCEL, "publish keeping the lock may not set CANCEL"},
      {dev(3) | LOCKED, dev(4), "unlock changing the frame"},
      {dev(3) | LOCKED, dev(4) | LOCKED, "frame change while locked"},
      {dev(3) | LOCKED, dev(3) | LOCKED | CANCEL, "cancel a DEVICE page"},
      {kNone | LOCKED, kNone | LOCKED | CANCEL, "cancel a NONE page"},
      {kHost | LOCKED | CANCEL, kHost | LOCKED, "drop CANCEL while locked"},
      {kHost | GONE | LOCKED, kHost, "unlock dropping GONE"},
      {kHost | GONE | LOCKED, dev(2), "publish dropping GONE"},
      {kHost, kHost | LOCKED | GONE, "lock adding GONE"},
      {kHost | LOCKED, dev(2) | GONE, "publish adding GONE"},
      {kHost | LOCKED, kHost | MIGRATE, "MIGRATE into the state array"},
      {kHost | LOCKED, dev(2) | WRITE, "WRITE into the state array"},
      {kHost | MIGRATE, kHost | LOCKED, "from an invalid entry"},
      {kHost | LOCKED, kHost | (uint64_t{1} << FRAME_SHIFT), "unlock to HOST with a frame"},
      {kHost | LOCKED, kHost | DIRTY, "unlock setting DIRTY"},
      {kHost, kHost | DIRTY, "DIRTY set without the lock"},
      {kHost | DIRTY, kHost, "DIRTY dropped without the lock"},
      {kHost | LOCKED, dev(3) | LOCKED | FLUSH, "publish setting FLUSH"},
      {kHost | LOCKED, kHost | LOCKED | FLUSH, "FLUSH added to a held lock"},
      {kNone | LOCKED, kNone | LOCKED | DIRTY, "a NONE page dirty"},
  };
  for (const Transition &t : disallowed) {
    const char *why = nullptr;
    EXPECT_FALSE(transition_allowed(t.from, t.to, &why))
        << t.name << ": " << hex(t.from) << " -> " << hex(t.to);
    ASSERT_NE(why, nullptr) << t.name;
    EXPECT_GT(std::string(why).size(), 0u) << t.name;
  }
}

TEST(Entry, TransitionIsACheckedCas) {
  Entry e{kHost};
  uint64_t expected = kHost;
  ASSERT_TRUE(entry_transition(e, expected, kHost | LOCKED));
  EXPECT_EQ(e.load(), kHost | LOCKED);
  // Stale expectation: fails and reports the current value.
  uint64_t stale = kHost;
  EXPECT_FALSE(entry_transition(e, stale, kHost | LOCKED));
  EXPECT_EQ(stale, kHost | LOCKED);
  EXPECT_EQ(e.load(), kHost | LOCKED);
  // Publish.
  uint64_t cur = kHost | LOCKED;
  ASSERT_TRUE(entry_transition(e, cur, dev(42)));
  EXPECT_EQ(e.load(), dev(42));
}

TEST(Entry, TryLockAndUnlock) {
  Entry e{dev(11)};
  uint64_t old = 0;
  ASSERT_TRUE(entry_try_lock(e, &old));
  EXPECT_EQ(old, dev(11));
  EXPECT_EQ(e.load(), dev(11) | LOCKED);
  uint64_t old2 = 12345;
  EXPECT_FALSE(entry_try_lock(e, &old2));
  EXPECT_EQ(e.load(), dev(11) | LOCKED) << "a failed try-lock must not change the entry";
  entry_unlock(e);
  EXPECT_EQ(e.load(), dev(11));
  ASSERT_TRUE(entry_try_lock(e, &old));
  EXPECT_EQ(old, dev(11));
  entry_unlock(e);

  // Unlock drops CANCEL.
  Entry h{kHost};
  ASSERT_TRUE(entry_try_lock(h, &old));
  uint64_t cur = kHost | LOCKED;
  ASSERT_TRUE(entry_transition(h, cur, kHost | LOCKED | CANCEL));
  entry_unlock(h);
  EXPECT_EQ(h.load(), kHost);
}

// Two threads race for the same fresh entry many times: exactly one wins each round, and the
// winner sees the unlocked value.
TEST(Entry, TryLockFirstLockerWins) {
  constexpr int kRounds = 2000;
  std::vector<Entry> entries(kRounds);
  for (int i = 0; i < kRounds; ++i) entries[i].store(i % 2 ? kHost : dev(i));
  std::vector<int> wins[2];
  std::vector<uint64_t> olds[2];
  std::barrier sync(2);
  auto racer = [&](int id) {
    for (int i = 0; i < kRounds; ++i) {
      sync.arrive_and_wait();
      uint64_t old = 0;
      if (entry_try_lock(entries[i], &old)) {
        wins[id].push_back(i);
        olds[id].push_back(old);
      }
    }
  };
  std::thread a(racer, 0), b(racer, 1);
  a.join();
  b.join();
  std::vector<int> winners(kRounds, 0);
  for (int id = 0; id < 2; ++id)
    for (size_t k = 0; k < wins[id].size(); ++k) {
      int i = wins[id][k];
      ++winners[i];
      EXPECT_EQ(olds[id][k], i % 2 ? kHost : dev(i)) << "round " << i;
    }
  for (int i = 0; i < kRounds; ++i) {
    ASSERT_EQ(winners[i], 1) << "round " << i << ": " << winners[i] << " winners";
    EXPECT_TRUE(locked(entries[i].load()));
  }
  EXPECT_EQ(wins[0].size() + wins[1].size(), static_cast<size_t>(kRounds));
}

// Many threads hammering lock/unlock of one entry: the lock is exclusive (a plain counter
// protected by it never loses an increment).
TEST(Entry, TryLockIsExclusive) {
  Entry e{kHost};
  long counter = 0;  // protected by the entry lock
  constexpr int kThreads = 4, kIters = 20000;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < kIters; ++i) {
        uint64_t old;
        while (!entry_try_lock(e, &old)) std::this_thread::yield();
        long v = counter;
        counter = v + 1;
        entry_unlock(e);
      }
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(counter, long{kThreads} * kIters);
  EXPECT_EQ(e.load(), kHost);
}

TEST(Entry, MarkGone) {
  const uint64_t states[] = {kNone, kHost, dev(77), kHost | LOCKED, dev(77) | LOCKED,
                             kHost | LOCKED | CANCEL, kHost | GONE};
  for (uint64_t s : states) {
    Entry e{s};
    entry_mark_gone(e);
    uint64_t v = e.load();
    EXPECT_EQ(v, s | GONE) << hex(s);
    EXPECT_TRUE(entry_valid(v, nullptr)) << hex(v);
    EXPECT_EQ(loc(v), loc(s));
    EXPECT_EQ(frame(v), frame(s));
    EXPECT_EQ(locked(v), locked(s));
  }
  // A GONE page can still be locked and published; GONE survives.
  Entry e{dev(5)};
  entry_mark_gone(e);
  uint64_t old = 0;
  ASSERT_TRUE(entry_try_lock(e, &old));
  EXPECT_EQ(old, dev(5) | GONE);
  uint64_t cur = dev(5) | GONE | LOCKED;
  ASSERT_TRUE(entry_transition(e, cur, with_loc(cur, Loc::HOST)));
  EXPECT_EQ(e.load(), kHost | GONE);
}

// Marking GONE concurrently with lock/unlock never loses either update.
TEST(Entry, MarkGoneRacesWithLocking) {
  for (int round = 0; round < 200; ++round) {
    Entry e{kHost};
    std::atomic<bool> go{false};
    std::thread locker([&] {
      while (!go.load()) {
      }
      for (int i = 0; i < 200; ++i) {
        uint64_t old;
        if (entry_try_lock(e, &old)) entry_unlock(e);
      }
    });
    std::thread marker([&] {
      while (!go.load()) {
      }
      entry_mark_gone(e);
    });
    go.store(true);
    locker.join();
    marker.join();
    ASSERT_EQ(e.load(), kHost | GONE) << "round " << round;
  }
}

}  // namespace
