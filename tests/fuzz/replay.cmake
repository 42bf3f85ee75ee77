# tests/fuzz/replay.cmake — included by tests/CMakeLists.txt: ctest fuzz.replay (label fuzz), the
# fuzz target tests/fuzz/fuzz_api.cpp built by this build's compiler (gcc or clang, with this
# build's sanitizers) and a main (replay_main.cpp) that runs every input of tests/fuzz/corpus/ and
# tests/fuzz/regressions/ once. scripts/fuzz.sh is the fuzzer itself (clang + libFuzzer).
# FuzzedDataProvider.h is header-only and ships with clang (Debian: libclang-rt-<v>-dev); gcc
# compiles it when it is on the include path alone, so it is copied out of clang's resource
# directory. Without it fuzz.replay is still registered, and fails saying what is missing.
set(_umrt_fdp "")
find_program(UMRT_CLANG_EXE NAMES clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14)
set(_umrt_fdp_candidates "")
if(UMRT_CLANG_EXE)
  execute_process(COMMAND ${UMRT_CLANG_EXE} -print-resource-dir OUTPUT_VARIABLE _umrt_rd
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  list(APPEND _umrt_fdp_candidates "${_umrt_rd}/include/fuzzer/FuzzedDataProvider.h")
endif()
file(GLOB _umrt_fdp_glob /usr/lib/llvm-*/lib/clang/*/include/fuzzer/FuzzedDataProvider.h
                         /usr/lib/clang/*/include/fuzzer/FuzzedDataProvider.h)
list(APPEND _umrt_fdp_candidates ${_umrt_fdp_glob})
foreach(_c IN LISTS _umrt_fdp_candidates)
  if(EXISTS "${_c}")
    set(_umrt_fdp "${_c}")
    break()
  endif()
endforeach()

if(_umrt_fdp)
  configure_file("${_umrt_fdp}" "${CMAKE_CURRENT_BINARY_DIR}/fuzz-include/fuzzer/FuzzedDataProvider.h" COPYONLY)
  add_executable(fuzz_replay ${CMAKE_CURRENT_LIST_DIR}/fuzz_api.cpp ${CMAKE_CURRENT_LIST_DIR}/fuzz_c_helpers.c
                             ${CMAKE_CURRENT_LIST_DIR}/replay_main.cpp)
  target_include_directories(fuzz_replay SYSTEM PRIVATE "${CMAKE_CURRENT_BINARY_DIR}/fuzz-include")
  target_link_libraries(fuzz_replay PRIVATE umrt::umrt umrt_warnings Threads::Threads)
  add_test(NAME fuzz.replay
           COMMAND fuzz_replay ${CMAKE_CURRENT_LIST_DIR}/corpus ${CMAKE_CURRENT_LIST_DIR}/regressions)
else()
  message(WARNING "umrt: fuzzer/FuzzedDataProvider.h not found (install clang / libclang-rt-dev): fuzz.replay will fail")
  add_test(NAME fuzz.replay
           COMMAND ${CMAKE_COMMAND} -E echo "fuzz.replay: fuzzer/FuzzedDataProvider.h was not found at configure time; install clang (scripts/deps.sh) and reconfigure")
  set_tests_properties(fuzz.replay PROPERTIES WILL_FAIL ON)
endif()
set_tests_properties(fuzz.replay PROPERTIES LABELS fuzz TIMEOUT 600 SKIP_RETURN_CODE 77)
