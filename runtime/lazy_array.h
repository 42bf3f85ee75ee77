// lazy_array.h — a zero-initialised array that costs what is touched (issue "Scale", item 1).
//
// Page state is one 8-byte word per 4 KiB page: 2 GiB for a 1 TiB reservation. A large array
// is an anonymous MAP_NORESERVE mapping, so the kernel gives it memory one page at a time on
// first write (a page never written reads as zero, which is the state "never touched": Loc::NONE,
// no flags; a null pointer). A small one is a heap block (one mapping per small allocation
// would double the process's mapping count). Only for element types whose all-zero bytes are
// their initial value (std::atomic of an integer or a pointer).
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <new>
#include <vector>

#include "common.h"

namespace umrt::rt {

template <class T>
class LazyArray {
 public:
  static constexpr size_t kMapAtBytes = 64 * 1024;  // from this size on: a mapping

  LazyArray() = default;
  ~LazyArray() { reset(); }
  LazyArray(const LazyArray &) = delete;
  LazyArray &operator=(const LazyArray &) = delete;

  // n zero elements; -ENOMEM when neither heap nor address space is to be had.
  int init(size_t n) {
    reset();
    const size_t bytes = std::max<size_t>(n, 1) * sizeof(T);
    if (bytes >= kMapAtBytes) {
      const size_t len = round_up(bytes, kPageSize);
      void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) return -ENOMEM;
      madvise(p, len, MADV_DONTFORK);
      p_ = static_cast<T *>(p);
      map_len_ = len;
    } else {
      void *p = ::operator new(bytes, std::nothrow);
      if (!p) return -ENOMEM;
      std::memset(p, 0, bytes);
      p_ = static_cast<T *>(p);
    }
    n_ = n;
    return 0;
  }
  void reset() {
    if (map_len_) munmap(p_, map_len_);
    else ::operator delete(p_);
    p_ = nullptr;
    n_ = map_len_ = 0;
  }

  T &operator[](size_t i) const { return p_[i]; }
  T *get() const { return p_; }
  size_t size() const { return n_; }
  explicit operator bool() const { return p_ != nullptr; }

  // Calls f(first, end) for index runs that may hold non-zero elements: every page of the
  // mapping the kernel reports resident (mincore), the whole array when it is on the heap.
  // For checkers (the validator): an element on a page swapped out is skipped.
  template <class F>
  void for_each_populated(F &&f) const {
    if (!map_len_) {
      if (n_) f(size_t{0}, n_);
      return;
    }
    constexpr size_t kPer = kPageSize / sizeof(T);
    constexpr size_t kStep = 65536;  // pages per mincore call
    std::vector<unsigned char> vec(kStep);
    const size_t pages = map_len_ / kPageSize;
    for (size_t pg = 0; pg < pages; pg += kStep) {
      const size_t m = std::min(kStep, pages - pg);
      char *at = reinterpret_cast<char *>(p_) + pg * kPageSize;
      if (mincore(at, m * kPageSize, vec.data()) != 0) std::fill(vec.begin(), vec.begin() + m, 1);
      for (size_t k = 0; k < m;) {
        if (!(vec[k] & 1)) {
          ++k;
          continue;
        }
        size_t j = k;
        while (j < m && (vec[j] & 1)) ++j;
        const size_t a = (pg + k) * kPer, b = std::min(n_, (pg + j) * kPer);
        if (a < b) f(a, b);
        k = j;
      }
    }
  }

 private:
  T *p_ = nullptr;
  size_t n_ = 0;
  size_t map_len_ = 0;  // 0: heap
};

}  // namespace umrt::rt
