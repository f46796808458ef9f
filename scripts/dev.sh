#!/usr/bin/env bash
# fgbg developer entry point for a Debian 12 machine. Installs the Debian packages it is missing,
# configures a Release build and runs what was asked:
#   scripts/dev.sh demo        build and run the demo (examples/demo.cpp)
#   scripts/dev.sh test        build and run every test with ctest (unit tests + consumer projects)
#   scripts/dev.sh sanitize    the unit tests again, built with -fsanitize=address,undefined
#   scripts/dev.sh bench [ARGS...]  build the Google Benchmark suites with OpenMP and run them
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)

ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "fgbg: installing missing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

base_packages=(g++ cmake make libeigen3-dev)
cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    ensure_packages "${base_packages[@]}"
    cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DFGBG_BUILD_TESTS=OFF \
      -DFGBG_BUILD_BENCHMARKS=OFF -DFGBG_BUILD_EXAMPLES=ON >/dev/null
    cmake --build build/demo --target fgbg_demo -j "$jobs"
    ./build/demo/examples/fgbg_demo
    ;;
  test)
    ensure_packages "${base_packages[@]}" catch2 nlohmann-json3-dev
    cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Release -DFGBG_BUILD_TESTS=ON \
      -DFGBG_BUILD_BENCHMARKS=OFF -DFGBG_BUILD_EXAMPLES=ON >/dev/null
    cmake --build build/test -j "$jobs"
    ctest --test-dir build/test --output-on-failure -j "$jobs"
    ;;
  sanitize)
    ensure_packages "${base_packages[@]}" catch2 nlohmann-json3-dev
    # -march=native here also covers the AVX-512 paths, which the Release run (no -march) skips.
    # GCC 12 warns about uninitialised variables inside its own AVX-512 intrinsic headers at -O1.
    flags="-O1 -g -march=native -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -Wno-uninitialized -Wno-maybe-uninitialized"
    cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DFGBG_BUILD_TESTS=ON \
      -DFGBG_BUILD_BENCHMARKS=OFF -DFGBG_BUILD_EXAMPLES=OFF \
      -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
    cmake --build build/sanitize -j "$jobs"
    ctest --test-dir build/sanitize --output-on-failure -j "$jobs" -E '^consumer_'
    ;;
  bench)
    ensure_packages "${base_packages[@]}" libbenchmark-dev libomp-dev
    cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DFGBG_BUILD_TESTS=OFF \
      -DFGBG_BUILD_BENCHMARKS=ON -DFGBG_BUILD_EXAMPLES=OFF -DFGBG_USE_OPENMP=ON >/dev/null
    cmake --build build/bench -j "$jobs"
    for b in build/bench/benchmarks/bench_*; do
      echo "== $b"
      "$b" "$@"
    done
    ;;
  *)
    echo "usage: scripts/dev.sh demo | test | sanitize | bench [benchmark args]" >&2
    exit 2
    ;;
esac
