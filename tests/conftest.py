"""Shared fixtures and helpers for the fastbp test suite.

The compiled kernels (fastbp._core) are compared against fastbp.reference,
the pure-NumPy ground truth.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp
from fastbp import ops

# The suite checks that results do not depend on the thread count, so every kernel
# that has parts splits them over the threads it is given, however small: the pool
# would otherwise keep small kernels on the caller, by costs it measures on the
# machine. Tests of those decisions turn this off (the measured_costs fixture).
fastbp._core._force_parallel(True)

DTYPES = [np.float32, np.float64]
# the activations, from the registry (fastbp.ops): every test parametrized over
# them picks up a new one without anyone listing it
ACT_NAMES = [a.name for a in ops.ACTIVATIONS.values() if a.kernels]
ACTS = [None] + ACT_NAMES
#: every public kernel function of fastbp the registries name, plus the rest
PUBLIC_KERNELS = tuple(dict.fromkeys(
    ["dense_forward", "dense_backward"]
    + [k for a in ops.ACTIVATIONS.values() for k in a.kernels or ()]
    + [l.kernel for l in ops.LOSSES.values()]
    + ["sgd_update", "clip_by_value", "clip_by_global_norm", "global_norm"]))


def act_kernels(name):
    """fastbp's (forward(x, out=None), backward(dy, y, out=None)) of a registered
    activation: the functions its registry entry names, with its kernel_kwargs."""
    a = ops.ACTIVATIONS[name]
    f, b = (getattr(fastbp, k) for k in a.kernels)
    kw = dict(a.kernel_kwargs)
    return (lambda x, **k: f(x, **kw, **k)), (lambda dy, y, **k: b(dy, y, **kw, **k))


def bwd_in(activation, x, y):
    """What activation's backward takes: its forward output y, or for those whose
    derivative needs it (fastbp.ops backward_input "input") its input x."""
    a = ops.activation("bwd_in", activation, allow_none=True)
    return x if a.backward_input == "input" else y

# (N, I, O): unit, batch 1, primes, single input, I > 256, wide, tall, square.
SHAPES = [
    (1, 1, 1),
    (1, 7, 3),
    (7, 5, 3),
    (13, 1, 17),
    (3, 257, 2),
    (31, 11, 29),
    (2, 3, 300),     # wide
    (300, 4, 2),     # tall
    (64, 64, 64),
]
# rel_err of an analytic gradient against fastbp.reference.numerical_gradient
# (float64 central differences).
NUMGRAD_TOL = 1e-7

# N * O = 153600: the bias-gradient reduction has several blocks; O > 256 gives
# two column blocks.
BIG_SHAPE = (512, 64, 300)
ALL_SHAPES = SHAPES + [BIG_SHAPE]


def shape_id(shape):
    return "x".join(map(str, shape))


def tolerances(want, dtype):
    """(rtol, atol) for comparing a result of dtype against want."""
    want = np.asarray(want)
    mag = float(np.max(np.abs(want))) if want.size else 0.0
    if not np.isfinite(mag):
        finite = np.abs(want[np.isfinite(want)])
        mag = float(finite.max()) if finite.size else 0.0
    if np.dtype(dtype) == np.float64:
        return 1e-12, 1e-12 * mag
    return 1e-5, 1e-6 * mag


def assert_close(got, want, dtype, *, scale=1.0):
    """got ~= want for results computed in dtype; also checks type and shape.

    scale multiplies both tolerances (for long float32 reductions)."""
    dtype = np.dtype(dtype)
    assert isinstance(got, np.ndarray), type(got)
    want = np.asarray(want)
    assert got.dtype == dtype, f"dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    rtol, atol = tolerances(want, dtype)
    np.testing.assert_allclose(got, want, rtol=rtol * scale, atol=atol * scale)


def assert_loss_close(got, want, dtype):
    assert type(got) is float, type(got)
    rtol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-2)


def dense_data(rng, N, I, O, dtype, activation=None):
    """x (N, I), W (I, O), b (O,), dy (N, O), and y = forward output (reference)."""
    from fastbp import reference as ref

    x = rng.standard_normal((N, I)).astype(dtype)
    W = (rng.standard_normal((I, O)) / np.sqrt(I)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dy = rng.standard_normal((N, O)).astype(dtype)
    y = np.asarray(ref.dense_forward(x, W, b, activation), dtype=dtype)
    return x, W, b, dy, y


def raises(exc, fragment):
    """pytest.raises(exc) whose message contains fragment literally."""
    return pytest.raises(exc, match=re.escape(fragment))


def rel_err(a, b):
    """Relative error of a w.r.t. b, on the whole array."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12)


def dense_inputs(rng, N=4, I=3, O=2, activation=None, dtype=np.float64):
    """Random x (N, I), W (I, O), b (O,), all standard normal; with
    activation="relu", every pre-activation at least 1e-3 from the ReLU kink."""
    for _ in range(1000):
        x = rng.standard_normal((N, I)).astype(dtype)
        W = rng.standard_normal((I, O)).astype(dtype)
        b = rng.standard_normal(O).astype(dtype)
        if activation != "relu" or np.abs(x @ W + b).min() >= 1e-3:
            return x, W, b
    raise AssertionError("could not draw inputs away from the ReLU kink")


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def measured_costs():
    """The pool decides by the costs it measures, as outside the tests."""
    old = fastbp._core._force_parallel(False)
    yield
    fastbp._core._force_parallel(old)


@pytest.fixture
def restore_threads():
    """Restore fastbp's thread count after a test that changes it."""
    old = fastbp.get_num_threads()
    yield old
    fastbp.set_num_threads(old)


def child_env():
    """os.environ with the fastbp under test first on PYTHONPATH, for child
    processes."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def sigint_child(code, wait=1.0):
    """Run code in a child Python that prints "ready", then a JSON line last;
    send it SIGINT wait seconds after "ready". Returns (the JSON as a dict,
    the time.monotonic() at the signal: CLOCK_MONOTONIC, one clock for both
    processes)."""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(wait)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), sent
