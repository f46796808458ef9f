#!/usr/bin/env bash
# fgbg developer entry point for a Debian 12 machine. Installs the Debian packages it is missing,
# configures a Release build and runs what was asked:
#   scripts/dev.sh demo [--plot FILE.svg]  build and run the demo (examples/demo.cpp); --plot also
#                              writes its gradient-share chart as a self-contained SVG
#   scripts/dev.sh format [--fix]  check (or with --fix rewrite) every tracked *.cpp/*.hpp with
#                              clang-format-14 and the repository's .clang-format
#   scripts/dev.sh test        build and run every test with ctest (unit tests, consumer projects,
#                              the MPI tests under mpiexec, the Python package's pytest suite;
#                              FGBG_FUZZ_REPLAYS=OFF leaves out the corpus replays, as CI does)
#   scripts/dev.sh sanitize    the unit tests again, built with clang++-14 and
#                              -fsanitize=address,undefined (so CI also builds with Clang)
#   scripts/dev.sh fuzz [SECONDS]  build the libFuzzer targets of tests/fuzz with clang++-14 and
#                              run each for SECONDS (default 20) over a temporary copy of its
#                              committed corpus; fails on any crash or broken promise
#   scripts/dev.sh bench [ARGS...]  build the Google Benchmark suites with OpenMP and run them
#   scripts/dev.sh study [--quick] [ARGS...]  build the Python package and run the detector study
#                              (study/, docs/study.md): every method x 3 seeds, one thread at
#                              nice 19; 2.5-3 hours (--quick: about one hour); results,
#                              plots and the table of docs/study.md under study/results/
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
  format)
    ensure_packages clang-format-14 git
    mapfile -t files < <(git ls-files '*.cpp' '*.hpp')
    if [ "${1:-}" = "--fix" ]; then
      clang-format-14 -i "${files[@]}"
      echo "fgbg: formatted ${#files[@]} files"
    else
      clang-format-14 --dry-run --Werror "${files[@]}"
      echo "fgbg: ${#files[@]} files formatted as .clang-format asks"
    fi
    ;;
  demo)
    ensure_packages "${base_packages[@]}"
    cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DFGBG_BUILD_TESTS=OFF \
      -DFGBG_BUILD_BENCHMARKS=OFF -DFGBG_BUILD_EXAMPLES=ON >/dev/null
    cmake --build build/demo --target fgbg_demo -j "$jobs"
    ./build/demo/examples/fgbg_demo "$@"
    ;;
  test)
    # libopenmpi-dev and openmpi-bin: the MPI component's tests (tests/mpi, mpiexec with 2 and 3
    # ranks) and example run here too; ON, so that an MPI that is not found fails instead of
    # skipping them.
    # The Python package (python/) is built against Debian's torch for /usr/bin/python3 and its
    # pytest suite (tests/python) runs as one ctest, and examples/libtorch is built with
    # libtorch-dev and run (example_libtorch): both ON, so that a missing package fails instead of
    # skipping them.
    ensure_packages "${base_packages[@]}" catch2 nlohmann-json3-dev pkgconf libopenmpi-dev openmpi-bin \
      python3-torch python3-torchvision python3-numpy python3-pytest python3-setuptools python3-dev \
      pybind11-dev libtorch-dev
    cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Release -DFGBG_BUILD_TESTS=ON -DFGBG_WITH_MPI=ON \
      -DFGBG_WITH_PYTHON=ON -DFGBG_PYTHON_EXECUTABLE=/usr/bin/python3 -DFGBG_WITH_LIBTORCH=ON \
      -DFGBG_BUILD_BENCHMARKS=OFF -DFGBG_BUILD_EXAMPLES=ON \
      -DFGBG_BUILD_FUZZ_REPLAYS="${FGBG_FUZZ_REPLAYS:-ON}" >/dev/null
    cmake --build build/test -j "$jobs"
    ctest --test-dir build/test --output-on-failure -j "$jobs"
    ;;
  sanitize)
    ensure_packages "${base_packages[@]}" catch2 nlohmann-json3-dev clang-14 libclang-rt-14-dev libomp-dev
    # Clang 14 with libstdc++ 12: the CI's Clang build. -march=native here also covers the AVX-512
    # paths, which the Release run (no -march) skips. The corpus replays are left out: the fuzz
    # stage replays the corpus under the same sanitizers first. The header check is left out too:
    # the Release stage runs it. Unoptimised with line tables only (sanitizer reports need no
    # more) compiles fastest; the heavy tests get -O1 (FGBG_TEST_HEAVY_FLAGS) so they run fast.
    # The MPI component is off: LeakSanitizer reports Open MPI's own allocations of MPI_Init as
    # leaks, and what the MPI tests compute (sharded losses against one process) is the
    # arithmetic test_state already runs here under the sanitizers; the collectives are
    # Open MPI's. (tests/mpi passes under clang -O0 -march=native ASan+UBSan with
    # ASAN_OPTIONS=detect_leaks=0: docs/data_parallel.md.) The Python package and the libtorch
    # example are off too: neither is built with the sanitizers (setup.py and Torch's CMake use
    # their own flags), and the Release stage builds and runs both.
    opt=${FGBG_SANITIZE_OPT:--O0}
    heavy=${FGBG_SANITIZE_HEAVY:--O1}
    flags="$opt -march=native -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
    cmake -S . -B build/sanitize-clang -DCMAKE_BUILD_TYPE=Debug -DFGBG_BUILD_TESTS=ON \
      -DCMAKE_CXX_FLAGS_DEBUG=-gline-tables-only -DFGBG_TEST_HEAVY_FLAGS="$heavy" \
      -DFGBG_HEADER_CHECK=OFF -DFGBG_WITH_MPI=OFF -DFGBG_WITH_PYTHON=OFF -DFGBG_WITH_LIBTORCH=OFF \
      -DCMAKE_CXX_COMPILER=clang++-14 -DFGBG_BUILD_FUZZ_REPLAYS=OFF \
      -DFGBG_BUILD_BENCHMARKS=OFF -DFGBG_BUILD_EXAMPLES=OFF \
      -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
    cmake --build build/sanitize-clang -j "$jobs"
    ctest --test-dir build/sanitize-clang --output-on-failure -j "$jobs" -E '^consumer_'
    ;;
  fuzz)
    seconds=${1:-20}
    case "$seconds" in '' | *[!0-9]*) echo "fgbg: fuzz SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac
    ensure_packages "${base_packages[@]}" clang-14 libclang-rt-14-dev
    # Debug without -g: tests/fuzz/CMakeLists.txt gives the targets -O1 -gline-tables-only.
    cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="" \
      -DCMAKE_CXX_COMPILER=clang++-14 \
      -DFGBG_BUILD_FUZZERS=ON -DFGBG_BUILD_TESTS=OFF -DFGBG_BUILD_EXAMPLES=OFF \
      -DFGBG_BUILD_BENCHMARKS=OFF >/dev/null
    cmake --build build/fuzz -j "$jobs"
    # Each target fuzzes a temporary copy of its committed corpus: CI never writes into the repo.
    # Crashing inputs are kept in build/fuzz/artifacts/ (add them to tests/fuzz/corpus/<family>/
    # as regress-* once minimized: libFuzzer -minimize_crash=1).
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p build/fuzz/artifacts
    bins=(build/fuzz/tests/fuzz/fuzz_*)
    # Runs "$1 target" for every target, $jobs at a time (one core each); each job writes its
    # report to $work/<family>.$2 and its status to $work/<family>.$2.rc. Then prints the
    # reports in target order and lists the failed families in $work/$2.failed.
    pool() {
      local fn=$1 running=0 bin
      for bin in "${bins[@]}"; do
        "$fn" "$bin" &
        running=$((running + 1))
        if [ "$running" -ge "$jobs" ]; then
          wait -n || true
          running=$((running - 1))
        fi
      done
      wait || true
      local family
      : >"$work/$2.failed"
      for bin in "${bins[@]}"; do
        family=${bin##*/fuzz_}
        cat "$work/$family.$2"
        [ "$(cat "$work/$family.$2.rc")" = 0 ] || echo "$family" >>"$work/$2.failed"
      done
    }
    # 1. Strict: every committed input (seeds and the regress-* inputs of past violations) once,
    #    under ASan and UBSan. A failure here always fails the command.
    replay_one() {
      local bin=$1 family=${1##*/fuzz_} rc=0
      "$bin" -rss_limit_mb=2048 tests/fuzz/corpus/"$family"/* >"$work/$family.replay.log" 2>&1 || rc=$?
      if [ "$rc" -eq 0 ]; then
        echo "fuzz_$family: corpus replay ok ($(ls tests/fuzz/corpus/"$family" | wc -l) inputs)"
      else
        echo "fuzz_$family: corpus replay FAILED"
        grep -m3 -E 'fgbg fuzz violation|runtime error|ERROR:|Running:' "$work/$family.replay.log" | sed 's/^/    | /'
      fi >"$work/$family.replay"
      echo "$rc" >"$work/$family.replay.rc"
    }
    # 2. Exploration for SECONDS per target. FGBG_FUZZ_REPORT_ONLY=1 prints what it finds
    #    without failing (for local runs; see tests/fuzz/README.md).
    explore_one() {
      local bin=$1 family=${1##*/fuzz_} rc=0 seeds runs cov after a what
      mkdir -p "$work/$family/corpus" "$work/$family/artifacts"
      cp tests/fuzz/corpus/"$family"/* "$work/$family/corpus/"
      seeds=$(ls "$work/$family/corpus" | wc -l)
      # FGBG_FUZZ_SEED seeds libFuzzer's mutations (CI sets 1); unset, a random seed. A seed
      # does not make a run reproducible (the exploration also depends on timing): every run
      # may meet inputs no earlier run met (tests/fuzz/README.md).
      "$bin" -seed="${FGBG_FUZZ_SEED:-0}" -max_total_time="$seconds" -max_len=1024 -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$work/$family/artifacts/" \
        "$work/$family/corpus" >"$work/$family/log" 2>&1 || rc=$?
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$family/log" | tail -1)
      cov=$({ grep -o 'cov: [0-9]*' "$work/$family/log" || true; } | tail -1 | cut -d' ' -f2)
      after=$(ls "$work/$family/corpus" | wc -l)
      {
        if [ "$rc" -eq 0 ]; then
          echo "fuzz_$family: ok, ${runs:-?} runs in ${seconds} s, coverage ${cov:-?}, corpus $seeds -> $after"
        else
          cp "$work/$family/artifacts/"* build/fuzz/artifacts/ 2>/dev/null || true
          what=$(grep -m1 -E 'fgbg fuzz violation|runtime error|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)' "$work/$family/log" || true)
          echo "fuzz_$family: FAILED (exit $rc) after ${runs:-?} runs: ${what:-see log}"
          grep -m1 -A1 'fgbg fuzz violation' "$work/$family/log" | tail -1 || true
          for a in "$work/$family/artifacts/"*; do
            [ -e "$a" ] && echo "    input: build/fuzz/artifacts/${a##*/} (reproduce: $bin build/fuzz/artifacts/${a##*/})"
          done
          tail -n 40 "$work/$family/log" | sed 's/^/    | /'
        fi
      } >"$work/$family.explore"
      echo "$rc" >"$work/$family.explore.rc"
    }
    pool replay_one replay
    mapfile -t replay_failed <"$work/replay.failed"
    pool explore_one explore
    mapfile -t failed <"$work/explore.failed"
    if [ ${#replay_failed[@]} -ne 0 ]; then
      echo "fgbg: corpus replay failed for: ${replay_failed[*]}" >&2
      exit 1
    fi
    if [ ${#failed[@]} -ne 0 ]; then
      if [ "${FGBG_FUZZ_REPORT_ONLY:-0}" = 1 ]; then
        echo "fgbg: fuzzing found violations in: ${failed[*]} (reported, not failed: FGBG_FUZZ_REPORT_ONLY=1)"
      else
        echo "fgbg: fuzzing failed for: ${failed[*]}" >&2
        exit 1
      fi
    fi
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
  study)
    ensure_packages "${base_packages[@]}" python3-torch python3-torchvision python3-numpy \
      python3-matplotlib python3-setuptools python3-dev pybind11-dev
    # FGBG_BUILD_TESTS=ON only because the Python target lives with the tests; just it is built.
    cmake -S . -B build/study -DCMAKE_BUILD_TYPE=Release -DFGBG_BUILD_TESTS=ON \
      -DFGBG_WITH_PYTHON=ON -DFGBG_PYTHON_EXECUTABLE=/usr/bin/python3 -DFGBG_WITH_MPI=OFF \
      -DFGBG_WITH_LIBTORCH=OFF -DFGBG_BUILD_EXAMPLES=OFF -DFGBG_BUILD_BENCHMARKS=OFF >/dev/null
    cmake --build build/study --target fgbg_python -j 1
    case " $* " in *" --quick "*) out=study/results/quick ;; *) out=study/results/full ;; esac
    (cd study && PYTHONPATH="$PWD/../build/study/python/lib" PYTHONDONTWRITEBYTECODE=1 \
      OMP_NUM_THREADS=1 nice -n 19 /usr/bin/python3 -m fgbg_study.run --out "$PWD/../$out" \
      --docs "$PWD/../docs/study.md" "$@")
    ;;
  *)
    echo "usage: scripts/dev.sh demo | test | sanitize | fuzz [seconds] | bench [benchmark args] | study [--quick]" >&2
    exit 2
    ;;
esac
