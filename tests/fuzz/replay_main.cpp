// replay_main.cpp — the main of ctest fuzz.replay: runs every file of the directories (or files)
// given on the command line through fuzz_api.cpp's LLVMFuzzerTestOneInput, in name order, so the
// committed corpus (tests/fuzz/corpus) and every saved finding (tests/fuzz/regressions) are
// checked by the normal build with the normal compiler, without libFuzzer. Each input runs in a
// child process of its own (a mismatch traps inside the target), so one failing input does not
// hide the others: every failure is listed and the exit status is 1 if any failed. Files named
// *.md or starting with '.' are not inputs; an input running longer than kInputSeconds counts as
// a hang (failed). Exit 77 (ctest: skipped) when the runtime cannot
// start (userfaultfd refused).
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern "C" int umrt_fuzz_ready();

namespace {

// The longest one input may take: the slowest corpus input needs about 1 s under TSan.
constexpr unsigned kInputSeconds = 30;

bool is_input(const std::string &name) {
  if (name.empty() || name[0] == '.') return false;
  return !(name.size() > 3 && name.compare(name.size() - 3, 3, ".md") == 0);
}

// The inputs under `path` (a file, or the files of a directory), sorted; false if it is neither.
bool collect(const std::string &path, std::vector<std::string> *out) {
  struct stat sb;
  if (stat(path.c_str(), &sb) != 0) return false;
  if (S_ISREG(sb.st_mode)) {
    out->push_back(path);
    return true;
  }
  if (!S_ISDIR(sb.st_mode)) return false;
  DIR *d = opendir(path.c_str());
  if (!d) return false;
  std::vector<std::string> names;
  while (dirent *e = readdir(d)) {
    std::string n = e->d_name;
    if (!is_input(n)) continue;
    std::string full = path + "/" + n;
    if (stat(full.c_str(), &sb) == 0 && S_ISREG(sb.st_mode)) names.push_back(full);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  out->insert(out->end(), names.begin(), names.end());
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR|FILE...  (runs each input through the fuzz target)\n", argv[0]);
    return 2;
  }
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    if (!collect(argv[i], &inputs)) {
      std::fprintf(stderr, "replay: %s is neither a file nor a directory\n", argv[i]);
      return 2;
    }
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "replay: no inputs found\n");
    return 2;
  }
  std::vector<std::string> failed;
  for (const std::string &path : inputs) {
    std::ifstream f(path, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!f.good() && !f.eof()) {
      std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
      return 2;
    }
    std::printf("replay: %s (%zu bytes) ...", path.c_str(), bytes.size());
    std::fflush(stdout);
    std::fflush(stderr);
    const auto t0 = std::chrono::steady_clock::now();
    pid_t pid = fork();
    if (pid < 0) {
      std::perror("replay: fork");
      return 2;
    }
    if (pid == 0) {  // the runtime starts in the child: umrt is not usable after fork()
      alarm(kInputSeconds);  // a hang is a finding too (SIGALRM ends the child)
      if (!umrt_fuzz_ready()) _exit(77);
      LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      std::fflush(stdout);
      _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
      std::printf("\n[  SKIPPED ] replay: the runtime cannot start here (userfaultfd refused?)\n");
      return 77;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      std::printf(" ok (%.0f ms)\n", ms);
      continue;
    }
    char why[64];
    if (WIFSIGNALED(st)) std::snprintf(why, sizeof why, "signal %d, %s", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else std::snprintf(why, sizeof why, "exit status %d", WEXITSTATUS(st));
    std::printf(" FAILED (%s, %.0f ms)\n", why, ms);
    failed.push_back(path + " (" + why + ")");
  }
  if (!failed.empty()) {
    std::printf("replay: %zu of %zu inputs FAILED:\n", failed.size(), inputs.size());
    for (const std::string &f : failed) std::printf("replay:   %s\n", f.c_str());
    return 1;
  }
  std::printf("replay: %zu inputs, all passed\n", inputs.size());
  return 0;
}
