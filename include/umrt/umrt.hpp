// umrt.hpp — C++ RAII wrappers over the C API of umrt.h.
//
// umrt::buffer<T> owns one managed allocation of n elements; umrt::error carries a failed
// status and umrt_last_error()'s message. Exceptions stay on the C++ side: the C API never throws.
#ifndef UMRT_UMRT_HPP
#define UMRT_UMRT_HPP

#include <umrt/umrt.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace umrt {

class error : public std::runtime_error {
 public:
  error(umrt_status s, const std::string &what)
      : std::runtime_error(what + ": " + umrt_status_string(s) + " (" + umrt_last_error() + ")"),
        status_(s) {}
  umrt_status status() const noexcept { return status_; }

 private:
  umrt_status status_;
};

inline void check(umrt_status s, const char *what) {
  if (s != UMRT_SUCCESS) throw error(s, what);
}

enum class location { host = UMRT_LOCATION_HOST, device = UMRT_LOCATION_DEVICE };

// Initialises umrt on construction and shuts it down (all pages home) on destruction.
class runtime {
 public:
  runtime() { check(umrt_init(nullptr), "umrt_init"); }
  explicit runtime(const umrt_config &cfg) { check(umrt_init(&cfg), "umrt_init"); }
  ~runtime() { umrt_shutdown(); }
  runtime(const runtime &) = delete;
  runtime &operator=(const runtime &) = delete;

  static umrt_stats stats() {
    umrt_stats s{};
    check(umrt_get_stats(&s), "umrt_get_stats");
    return s;
  }
};

// One managed allocation of n objects of T (trivially copyable types: pages move by copy).
template <typename T>
class buffer {
 public:
  buffer() = default;
  explicit buffer(std::size_t n) : n_(n) {
    void *p = nullptr;
    check(umrt_malloc(&p, n * sizeof(T)), "umrt_malloc");
    p_ = static_cast<T *>(p);
  }
  ~buffer() { reset(); }
  buffer(const buffer &) = delete;
  buffer &operator=(const buffer &) = delete;
  buffer(buffer &&o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  buffer &operator=(buffer &&o) noexcept {
    if (this != &o) {
      reset();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  T *data() const noexcept { return p_; }
  std::size_t size() const noexcept { return n_; }
  std::size_t bytes() const noexcept { return n_ * sizeof(T); }
  T &operator[](std::size_t i) const noexcept { return p_[i]; }
  T *begin() const noexcept { return p_; }
  T *end() const noexcept { return p_ + n_; }

  // Device address of element i (linear over the allocation).
  T *device_data(std::size_t i = 0) const {
    void *d = nullptr;
    check(umrt_device_pointer(p_ + i, &d), "umrt_device_pointer");
    return static_cast<T *>(d);
  }
  // Move elements [first, first + count) (default: all) to loc; stream nullptr = synchronous.
  void prefetch(location loc, std::size_t first = 0, std::size_t count = npos,
                void *stream = nullptr) const {
    if (count == npos) count = n_ - first;
    check(umrt_prefetch(p_ + first, count * sizeof(T), static_cast<umrt_location>(loc), stream),
          "umrt_prefetch");
  }
  location where(std::size_t i) const {
    umrt_location l{};
    check(umrt_page_location(p_ + i, &l), "umrt_page_location");
    return static_cast<location>(l);
  }
  void reset() noexcept {
    if (p_) umrt_free(p_);
    p_ = nullptr;
    n_ = 0;
  }

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

 private:
  T *p_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace umrt

#endif  // UMRT_UMRT_HPP
