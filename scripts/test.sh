#!/usr/bin/env bash
# test.sh — the README's test command: builds and runs the whole suite twice,
# once with gcc (optimised) and once with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer. Both builds use -Wall -Wextra -Werror. The
# optimised Release build the demo uses is compiled too: -O3 brings warnings
# (maybe-uninitialized, stringop-overflow) that -O2 does not.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc > /dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=gcc > /dev/null
cmake --build build-release -j"$jobs"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DMP_SANITIZE=ON \
    > /dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
