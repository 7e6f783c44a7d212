#!/usr/bin/env bash
# tools/sanitize.sh - run the whole test suite against an ASan+UBSan build.
#
# Builds fastbp._core with FASTBP_SANITIZE=address,undefined (setup.py adds
# -fsanitize=address,undefined -fno-omit-frame-pointer -g -O1) in a copy of the
# sources under build/sanitize/, so the normal in-place build is never touched,
# then runs `python -m pytest tests` against that copy with the ASan runtime
# preloaded (CPython itself is not instrumented). Every process the tests start
# inherits the settings, and reports are written to files, so a report in a
# child process (the fuzz batch, the fork/spawn tests) is caught too.
#
# Fails (exit 1) on any sanitizer report or test failure.
#
# Usage: tools/sanitize.sh [pytest args...]     e.g. tools/sanitize.sh -x -k fuzz
# Env:   PYTHON (default python3), CC (default gcc),
#        FASTBP_SANITIZE_DIR (default build/sanitize)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
CC=${CC:-gcc}
WORK=${FASTBP_SANITIZE_DIR:-$ROOT/build/sanitize}
TREE=$WORK/tree
LOGS=$WORK/reports
t_start=$(date +%s)

log() { printf '[sanitize] %s\n' "$*"; }

# ---- 1. the ASan runtime --------------------------------------------------------
ASAN_LIB=$("$CC" -print-file-name=libasan.so)
if [[ "$ASAN_LIB" != /* || ! -e "$ASAN_LIB" ]]; then
    echo "sanitize.sh: $CC has no libasan.so (got '$ASAN_LIB'); install libasan/gcc" >&2
    exit 2
fi
log "ASan runtime: $ASAN_LIB"

# ---- 2. a sanitized build in a copy of the sources ----------------------------------
rm -rf "$TREE" "$LOGS"
mkdir -p "$TREE" "$LOGS"
(cd "$ROOT" && tar cf - --exclude='*.so' --exclude='_core.c' --exclude='__pycache__' \
    setup.py build_cuda.py pyproject.toml README.md csrc src) | (cd "$TREE" && tar xf -)
log "building fastbp._core with FASTBP_SANITIZE=address,undefined in $TREE"
(cd "$TREE" && CC="$CC" FASTBP_SANITIZE=address,undefined \
    "$PY" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1) || {
    tail -40 "$WORK/build.log" >&2
    echo "sanitize.sh: the sanitized build failed (log: $WORK/build.log)" >&2
    exit 1
}
t_built=$(date +%s)
log "built in $((t_built - t_start)) s"

# ---- 3. the test suite under the sanitizers ----------------------------------------
export PYTHONPATH="$TREE/src${PYTHONPATH:+:$PYTHONPATH}"
# libstdc++ too: ASan resolves its C++ interceptors (__cxa_throw) at start-up, and a
# C++ extension loaded later (matplotlib's, in the CLI's chart tests) would throw
# through a null interceptor
STDCXX_LIB=$("$CC" -print-file-name=libstdc++.so)
[[ "$STDCXX_LIB" == /* && -e "$STDCXX_LIB" ]] || STDCXX_LIB=
export LD_PRELOAD="$ASAN_LIB${STDCXX_LIB:+:$STDCXX_LIB}${LD_PRELOAD:+:$LD_PRELOAD}"
# detect_leaks=0: CPython keeps its interned objects and arenas until exit by design.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:log_path=$LOGS/asan:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOGS/ubsan:${UBSAN_OPTIONS:-}"
export PYTHONFAULTHANDLER=1

core=$(cd "$ROOT/tests" && "$PY" -c 'import fastbp._core as c; print(c.__file__)')
case "$core" in
    "$TREE"/*) log "testing $core" ;;
    *) echo "sanitize.sh: fastbp._core resolves to $core, not the sanitized build" >&2; exit 1 ;;
esac
if ! nm -D "$core" 2>/dev/null | grep -q __asan_init && ! ldd "$core" | grep -q libasan; then
    echo "sanitize.sh: $core is not instrumented" >&2
    exit 1
fi

set +e
(cd "$ROOT" && "$PY" -m pytest -q -p no:cacheprovider tests "$@")
status=$?
set -e
t_end=$(date +%s)

# ---- 4. verdict -------------------------------------------------------------------
reports=$(find "$LOGS" -type f | sort)
if [[ -n "$reports" ]]; then
    echo "sanitize.sh: sanitizer reports:" >&2
    for f in $reports; do
        echo "==== $f" >&2
        head -60 "$f" >&2
    done
fi
log "tests: $((t_end - t_built)) s, total: $((t_end - t_start)) s, pytest status $status"
if [[ -n "$reports" ]]; then
    echo "sanitize.sh: FAILED: $(echo "$reports" | wc -l) sanitizer report file(s) in $LOGS" >&2
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "sanitize.sh: FAILED: pytest exited with status $status" >&2
    exit 1
fi
log "OK: no ASan/UBSan reports, all tests passed"
