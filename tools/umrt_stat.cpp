// umrt-stat — a live view of processes using umrt, read from the statistics segment each of them
// publishes (/dev/shm/umrt.<pid>, runtime/stat_segment.h; UMRT_STAT=0 turns it off there).
//
//   umrt-stat                      the processes using umrt: pid, command, allocations, memory
//   umrt-stat PID [--interval S] [--count N] [--top N]
//                                  a line of rates per interval (faults/s, MB/s each way,
//                                  evictions/s, refetches/s), then the largest allocations
//   umrt-stat PID --json           one snapshot as JSON: every counter and the allocations
//
// Segments left by processes that are gone (killed: never removed) are recognised — the pid is
// dead, or its process start time (/proc/<pid>/stat field 22) is not the one recorded — and
// ignored: the list says so on stderr, `umrt-stat PID` fails with "stale". Exit status: 0 done
// (also when the watched process ends), 1 an error (no such process, not using umrt, stale,
// layout version mismatch, permission denied), 2 bad arguments.
#include "stat_segment.h"

#include <CLI/CLI.hpp>
#include <dirent.h>
#include <nlohmann/json.hpp>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace st = umrt::stat;

std::string comm_of(long pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string s;
  std::getline(f, s);
  return s.empty() ? "?" : s;
}

uint64_t stat_value(const st::Segment &s, const char *name) {
  for (uint32_t i = 0; i < std::min(s.stat_count, st::kStatCount); ++i)
    if (!std::strcmp(st::kStatNames[i], name)) return s.stats[i];
  return 0;
}

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

double mib(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

// The snapshot of pid, or a message on stderr and false.
bool snapshot(long pid, st::Segment *s) {
  uint32_t version = 0;
  st::ReadResult r = st::ReadResult::not_ready;
  for (int tries = 0; tries < 20; ++tries) {  // a segment being created: up to ~1 s
    r = st::read_segment(pid, s, true, &version);
    if (r != st::ReadResult::not_ready) break;
    usleep(50000);
  }
  switch (r) {
    case st::ReadResult::ok: return true;
    case st::ReadResult::missing:
      if (!st::pid_alive(pid)) std::fprintf(stderr, "umrt-stat: no such process: %ld\n", pid);
      else
        std::fprintf(stderr, "umrt-stat: process %ld (%s) is not using umrt (no %s/umrt.%ld; or it runs with UMRT_STAT=0)\n",
                     pid, comm_of(pid).c_str(), st::kShmDir, pid);
      return false;
    case st::ReadResult::stale:
      std::fprintf(stderr, "umrt-stat: %s/umrt.%ld is stale: %s (ignored)\n", st::kShmDir, pid,
                   st::pid_alive(pid) ? "pid reused by another process" : "its process is gone");
      return false;
    case st::ReadResult::version:
      std::fprintf(stderr, "umrt-stat: %s/umrt.%ld has layout version %u; this umrt-stat reads version %u\n",
                   st::kShmDir, pid, version, st::kVersion);
      return false;
    case st::ReadResult::denied:
      std::fprintf(stderr, "umrt-stat: %s/umrt.%ld: permission denied (readable by its owner and root only)\n",
                   st::kShmDir, pid);
      return false;
    default:
      std::fprintf(stderr, "umrt-stat: %s/umrt.%ld: %s\n", st::kShmDir, pid, st::read_result_string(r));
      return false;
  }
}

nlohmann::json to_json(long pid, const st::Segment &s) {
  nlohmann::json j;
  j["pid"] = pid;
  j["command"] = comm_of(pid);
  j["layout_version"] = s.version;
  j["backend"] = std::string(s.backend, strnlen(s.backend, sizeof s.backend));
  j["start_time"] = s.start_time;
  j["created_unix_ns"] = s.created_unix_ns;
  j["updates"] = s.updates;
  j["interval_ns"] = s.interval_ns;
  const uint64_t now = mono_ns();
  j["age_ms"] = now > s.updated_ns ? (now - s.updated_ns) / 1000000 : 0;  // since the last update
  j["allocations_live"] = s.nallocs;
  j["allocated_bytes"] = s.alloc_bytes;
  j["refetches"] = s.refetches;
  j["host_budget"] = s.host_budget;
  nlohmann::json stats = nlohmann::json::object();
  for (uint32_t i = 0; i < std::min(s.stat_count, st::kStatCount); ++i) stats[st::kStatNames[i]] = s.stats[i];
  j["stats"] = stats;
  nlohmann::json rows = nlohmann::json::array();
  for (uint64_t i = 0; i < std::min<uint64_t>(s.nrows, st::kAllocRows); ++i) {
    const st::Alloc &a = s.allocs[i];
    rows.push_back({{"address", a.address},
                    {"size", a.size},
                    {"host_bytes", a.host_bytes},
                    {"device_bytes", a.device_bytes},
                    {"storage_bytes", a.storage_bytes},
                    {"faults", a.faults},
                    {"evictions", a.evictions},
                    {"refetches", a.refetches},
                    {"file", (a.flags & st::kFile) != 0},
                    {"writable", (a.flags & st::kWritable) != 0},
                    {"packed", (a.flags & st::kPacked) != 0}});
  }
  j["allocations"] = rows;
  return j;
}

int list_processes() {
  DIR *d = opendir(st::kShmDir);
  if (!d) {
    std::fprintf(stderr, "umrt-stat: %s: %s\n", st::kShmDir, strerror(errno));
    return 1;
  }
  std::vector<long> pids;
  while (dirent *e = readdir(d)) {
    if (std::strncmp(e->d_name, "umrt.", 5) != 0 || !e->d_name[5]) continue;
    char *end = nullptr;
    const long pid = std::strtol(e->d_name + 5, &end, 10);
    if (!*end && pid > 0) pids.push_back(pid);
  }
  closedir(d);
  std::sort(pids.begin(), pids.end());
  int shown = 0;
  for (long pid : pids) {
    st::Segment s;
    const st::ReadResult r = st::read_segment(pid, &s);
    if (r != st::ReadResult::ok) {
      std::fprintf(stderr, "umrt-stat: %s/umrt.%ld: %s (ignored)\n", st::kShmDir, pid,
                   r == st::ReadResult::stale ? "stale: its process is gone" : st::read_result_string(r));
      continue;
    }
    if (shown++ == 0)
      std::printf("%8s  %-16s %-7s %7s %10s %10s %10s %12s\n", "PID", "COMMAND", "BACKEND", "ALLOCS", "ALLOC_MiB",
                  "HOST_MiB", "DEV_MiB", "FAULTS");
    std::printf("%8ld  %-16s %-7.7s %7" PRIu64 " %10.1f %10.1f %10.1f %12" PRIu64 "\n", pid, comm_of(pid).c_str(), s.backend,
                s.nallocs, mib(s.alloc_bytes), mib(stat_value(s, "host_pages") * 4096),
                mib(stat_value(s, "device_bytes_in_use")), stat_value(s, "cpu_faults"));
  }
  if (!shown) std::printf("no process is using umrt (or they run with UMRT_STAT=0)\n");
  return 0;
}

void print_rates_header() {
  std::printf("%8s %10s %10s %10s %10s %10s %9s %9s %9s %9s\n", "time", "faults/s", "toDev_MB/s", "toHost_MB/s",
              "toSto_MB/s", "frSto_MB/s", "evict/s", "refetch/s", "dev_MiB", "host_MiB");
}

int watch(long pid, double interval, long count, unsigned top) {
  st::Segment prev;
  if (!snapshot(pid, &prev)) return 1;
  std::printf("umrt-stat: pid %ld (%s), backend %.16s, device %.1f MiB, %" PRIu64 " allocations (%.1f MiB)%s\n", pid,
              comm_of(pid).c_str(), prev.backend, mib(stat_value(prev, "device_capacity")), prev.nallocs,
              mib(prev.alloc_bytes), prev.host_budget ? (", host budget " + std::to_string(prev.host_budget >> 20) + " MiB").c_str() : "");
  print_rates_header();
  std::fflush(stdout);
  for (long n = 0; count <= 0 || n < count; ++n) {
    std::this_thread::sleep_for(std::chrono::duration<double>(interval));
    st::Segment cur;
    const st::ReadResult r = st::read_segment(pid, &cur);
    if (r == st::ReadResult::missing || r == st::ReadResult::stale) {
      std::printf("umrt-stat: process %ld ended\n", pid);
      return 0;
    }
    if (r != st::ReadResult::ok) return snapshot(pid, &cur) ? 0 : 1;
    const double dt = cur.updated_ns > prev.updated_ns ? static_cast<double>(cur.updated_ns - prev.updated_ns) / 1e9 : 0;
    auto rate = [&](const char *name, double scale) {
      const uint64_t a = stat_value(prev, name), b = stat_value(cur, name);
      return dt > 0 && b >= a ? static_cast<double>(b - a) / dt / scale : 0.0;
    };
    const double refetch = dt > 0 && cur.refetches >= prev.refetches ? static_cast<double>(cur.refetches - prev.refetches) / dt : 0;
    time_t t = time(nullptr);
    char hms[16];
    strftime(hms, sizeof hms, "%H:%M:%S", localtime(&t));
    std::printf("%8s %10.0f %10.1f %10.1f %10.1f %10.1f %9.1f %9.1f %9.1f %9.1f%s\n", hms, rate("cpu_faults", 1),
                rate("bytes_to_device", 1e6), rate("bytes_to_host", 1e6), rate("bytes_to_storage", 1e6),
                rate("bytes_from_storage", 1e6), rate("evictions", 1), refetch, mib(stat_value(cur, "device_bytes_in_use")),
                mib(stat_value(cur, "host_pages") * 4096), dt > 0 ? "" : "  (no update: process stopped?)");
    // The largest allocations: residency now, and their counters' rates.
    for (uint64_t i = 0; i < std::min<uint64_t>({cur.nrows, top, st::kAllocRows}); ++i) {
      const st::Alloc &a = cur.allocs[i];
      const st::Alloc *p = nullptr;
      for (uint64_t k = 0; k < prev.nrows && k < st::kAllocRows; ++k)
        if (prev.allocs[k].address == a.address && prev.allocs[k].size == a.size) p = &prev.allocs[k];
      auto arate = [&](uint64_t now_v, uint64_t then_v) {
        return p && dt > 0 && now_v >= then_v ? static_cast<double>(now_v - then_v) / dt : 0.0;
      };
      if (i == 0)
        std::printf("  %-18s %9s %9s %9s %9s %9s %8s %9s%s\n", "  alloc", "size_MiB", "host_MiB", "dev_MiB", "sto_MiB",
                    "faults/s", "evict/s", "refetch/s", "");
      std::printf("  %#-18" PRIx64 " %9.1f %9.1f %9.1f %9.1f %9.0f %8.1f %9.1f%s%s\n", a.address, mib(a.size),
                  mib(a.host_bytes), mib(a.device_bytes), mib(a.storage_bytes), p ? arate(a.faults, p->faults) : 0.0,
                  p ? arate(a.evictions, p->evictions) : 0.0, p ? arate(a.refetches, p->refetches) : 0.0,
                  (a.flags & st::kFile) ? " file" : "", p && a.refetches > p->refetches ? " THRASHING" : "");
    }
    std::fflush(stdout);
    prev = cur;
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  CLI::App app{"umrt-stat: a live view of processes using umrt (their /dev/shm/umrt.<pid> segments)"};
  long pid = 0;
  bool json = false;
  double interval = 1.0;
  long count = 0;
  unsigned top = 5;
  app.add_option("pid", pid, "the process to watch (none: list the processes using umrt)")->check(CLI::PositiveNumber);
  app.add_flag("--json", json, "print one snapshot as JSON and exit");
  app.add_option("-i,--interval", interval, "seconds between lines (default 1)")->check(CLI::Range(0.05, 3600.0));
  app.add_option("-c,--count", count, "lines to print, then exit (default: until the process ends)")->check(CLI::NonNegativeNumber);
  app.add_option("--top", top, "largest allocations shown under each line (default 5, 0: none)")->check(CLI::Range(0u, st::kAllocRows));
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (pid == 0) {
    if (json) {
      std::fprintf(stderr, "umrt-stat: --json needs a PID\n");
      return 2;
    }
    return list_processes();
  }
  if (json) {
    st::Segment s;
    if (!snapshot(pid, &s)) return 1;
    std::printf("%s\n", to_json(pid, s).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  return watch(pid, interval, count, top);
}
