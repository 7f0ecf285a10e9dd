#!/usr/bin/env bash
# Builds fastrag._core with AddressSanitizer + UndefinedBehaviorSanitizer and runs the core
# tests against it. Exits non-zero on a failing test or on any sanitizer report.
#
#   tests/sanitize.sh                 # build (incremental) + the core tests
#   tests/sanitize.sh -k maxsim       # extra arguments go to pytest
#
# Needs: the project's Python environment (numpy, pytest, pybind11, cmake, ninja: the ones the
# normal build uses), gcc or clang with libasan. No network, no torch, nothing installed: the
# module is built with CMake into build/sanitize (FASTRAG_SANITIZE=ON, the default build is
# untouched) and imported from a copy of python/fastrag in a temporary folder, ahead of any
# installed or editable fastrag.
#
# Environment: PYTHON (default: python3 on PATH), FASTRAG_SANITIZE_BUILD (build folder,
# default build/sanitize), JOBS (build jobs, default 2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BUILD="${FASTRAG_SANITIZE_BUILD:-$ROOT/build/sanitize}"
JOBS="${JOBS:-2}"
TESTS=(tests/test_bm25_core.py tests/test_bm25_impact_cache.py tests/test_dense_core.py tests/test_maxsim.py
       tests/test_pooling.py tests/test_index_limits.py tests/test_sparse_approx.py
       tests/test_ascii_words.py tests/test_executor_core.py)

start=$(date +%s)
CXX_COMPILER="${CXX:-$(command -v g++ || command -v clang++)}"
LIBASAN="$("$CXX_COMPILER" -print-file-name=libasan.so)"
# Preloaded with the runtime too: python does not link libstdc++, and ASan must find the real
# __cxa_throw when it starts, or the first C++ exception aborts ("real___cxa_throw != 0").
LIBSTDCXX="$("$CXX_COMPILER" -print-file-name=libstdc++.so.6)"
if [[ ! -e "$LIBASAN" || ! -e "$LIBSTDCXX" ]]; then
  echo "sanitize.sh: no libasan.so / libstdc++.so.6 for $CXX_COMPILER" >&2
  exit 2
fi

GENERATOR=()
if command -v ninja >/dev/null || [[ -x "$(dirname "$(command -v "$PYTHON")")/ninja" ]]; then
  GENERATOR=(-G Ninja)
  PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
fi
# A build folder configured with another generator cannot be reused.
if [[ -f "$BUILD/CMakeCache.txt" ]] &&
   ! grep -q "CMAKE_GENERATOR:INTERNAL=${GENERATOR[1]:-Unix Makefiles}" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi
echo "== configure + build ($BUILD)"
cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$CXX_COMPILER" \
  -DFASTRAG_SANITIZE=ON \
  -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
  -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target _core
built=$(date +%s)

# The package from the source tree with the sanitized module beside it, imported first.
STAGE="$(mktemp -d "${TMPDIR:-/tmp}/fastrag-sanitize.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
cp -r "$ROOT/python/fastrag" "$STAGE/fastrag"
find "$STAGE/fastrag" -name '_core*.so' -delete
cp "$BUILD"/_core*.so "$STAGE/fastrag/"
# An editable install puts its import hook first on sys.meta_path: this pytest plugin takes
# it out, so that `import fastrag` finds the staged copy.
cat >"$STAGE/fastrag_sanitize_plugin.py" <<'EOF'
import sys

sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
for name in [m for m in sys.modules if m == "fastrag" or m.startswith("fastrag.")]:
    del sys.modules[name]
EOF

LOG="$STAGE/pytest.log"
run() {
  # detect_leaks=0: CPython frees little at exit; the leak report would be its, not ours.
  # halt_on_error: a report aborts the process with its exit code, so it fails the run even
  # when it comes from a worker thread; the report itself is written to $STAGE/report.<pid>.
  (cd "$ROOT" &&
    PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}" \
    LD_PRELOAD="$LIBASAN $LIBSTDCXX" \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86:log_path=$STAGE/report" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87:log_path=$STAGE/report" \
    PYTHONDONTWRITEBYTECODE=1 \
    "$PYTHON" "$@")
}
# The module under test must be the sanitized one: a run against a normal build proves nothing.
module=$(run -c 'import fastrag_sanitize_plugin, fastrag._core as c; print(c.__file__)')
if [[ "$module" != "$STAGE"/* ]]; then
  echo "sanitize.sh: imported $module, not the sanitized build in $STAGE" >&2
  exit 2
fi
echo "== tests under ASan + UBSan ($module): ${TESTS[*]} $*"
set +e
# The agreement test with Seismic runs pyseismic-lsr's Rust extension, which aborts in its
# rayon build threads under the preloaded ASan runtime: third-party code, not the core's.
run -m pytest -q -p fastrag_sanitize_plugin -p no:cacheprovider "${TESTS[@]}" \
  --deselect tests/test_sparse_approx.py::test_agrees_with_seismic "$@" 2>&1 |
  tee "$LOG"
status=${PIPESTATUS[0]}
set -e
# Reports go to files (pytest captures stderr, and an aborted run never shows it).
reports=0
for report in "$STAGE"/report.*; do
  [[ -e "$report" ]] || continue
  reports=$((reports + 1))
  echo "== sanitizer report $report" && cat "$report"
done
end=$(date +%s)
echo "== build $((built - start)) s, tests $((end - built)) s, pytest exit $status," \
  "sanitizer reports $reports"
if [[ $reports -gt 0 ]]; then
  exit 1
fi
exit "$status"
