"""The exp-heavy kernels exist as baseline, AVX2+FMA and AVX-512 copies chosen at
import; each must match the reference (they agree to rounding, not bitwise)."""
import numpy as np
import pytest

import fastbp
from fastbp import _core
from fastbp import reference as ref


@pytest.fixture(params=["baseline", "avx2", "avx512"])
def dispatch(request):
    before = _core.cpu_dispatch()
    used = _core.set_cpu_dispatch(request.param)
    if used != request.param:
        _core.set_cpu_dispatch(before)
        pytest.skip(f"this CPU has no {request.param}")
    yield used
    _core.set_cpu_dispatch(before)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_paths_match_reference(dispatch, dtype, rtol):
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((300, 257)) * 20).astype(dtype)
    z[3, 7] = -np.inf
    labels = rng.integers(0, 257, 300)
    loss, dz = fastbp.softmax_cross_entropy(z, labels)
    rloss, rdz = ref.softmax_cross_entropy(z, labels)
    assert loss == pytest.approx(rloss, rel=rtol)
    np.testing.assert_allclose(dz, rdz, rtol=rtol * 10, atol=rtol * np.abs(rdz).max())
    x = (rng.standard_normal((64, 1000)) * 30).astype(dtype)
    np.testing.assert_allclose(fastbp.sigmoid_forward(x), ref.sigmoid_forward(x), rtol=rtol * 2)
    W = rng.standard_normal((1000, 33)).astype(dtype) / 30
    b = rng.standard_normal(33).astype(dtype)
    np.testing.assert_allclose(fastbp.dense_forward(x, W, b, "sigmoid"),
                               ref.dense_forward(x, W, b, "sigmoid"), rtol=1e-4, atol=1e-5)


def test_deterministic_across_threads_on_each_path(dispatch, restore_threads):
    z = np.random.default_rng(6).standard_normal((2048, 1000)).astype(np.float32)
    labels = np.arange(2048) % 1000
    out = []
    for n in (1, 2, 3):
        fastbp.set_num_threads(n)
        out.append(fastbp.softmax_cross_entropy(z, labels))
    assert all(o[0] == out[0][0] and np.array_equal(o[1], out[0][1]) for o in out)


def test_set_cpu_dispatch_rejects_unknown_levels():
    with pytest.raises(ValueError, match="level must be one of"):
        _core.set_cpu_dispatch("sse9")


def test_unknown_fastbp_dispatch_warns_and_imports(tmp_path):
    """No environment variable may make the package unusable."""
    import os
    import subprocess
    import sys

    src = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    env = dict(os.environ, FASTBP_DISPATCH="bogus",
               PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-W", "always", "-c",
                        "import fastbp; print(fastbp._core.cpu_dispatch())"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "FASTBP_DISPATCH='bogus'" in r.stderr
    assert r.stdout.strip() in ("baseline", "avx2", "avx512")
