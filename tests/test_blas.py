"""The BLAS providers (fastbp._blas): choosing one, refusing a bad name, and the
same products through each."""
import json
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import _blas
from conftest import child_env

needs_mkl = pytest.mark.skipif("mkl" not in _blas.available(), reason="MKL is not installed")


@pytest.fixture
def restore_blas():
    old = fastbp.get_blas()
    yield
    fastbp.set_blas(old)


def _child(code, **env):
    e = child_env()
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=e, timeout=120)


@pytest.mark.parametrize("bad", ["blis", "", "MKL ", 3, None])
def test_set_blas_refuses_a_bad_name(bad, restore_blas):
    before = fastbp.get_blas()
    with pytest.raises(ValueError, match="set_blas: expected one of"):
        fastbp.set_blas(bad)
    assert fastbp.get_blas() == before


def test_a_bad_environment_variable_warns_and_imports(tmp_path):
    r = _child("import fastbp; print(fastbp.get_blas())", FASTBP_BLAS="blis",
               XDG_CACHE_HOME=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["openblas"]
    assert "FASTBP_BLAS='blis'" in r.stderr and "using OpenBLAS" in r.stderr


def test_the_environment_variable_chooses(tmp_path):
    for name in _blas.available():
        r = _child("import fastbp; from fastbp import _blas; i = _blas.info(); "
                   "print(i['provider'], i['chosen_by'])", FASTBP_BLAS=name,
                   XDG_CACHE_HOME=str(tmp_path))
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [name, "default" if name == "openblas" else "FASTBP_BLAS"]


def test_auto_measures_once_and_keeps_its_choice(tmp_path):
    """auto writes its choice, keyed by the CPU and the libraries, and a second
    process takes it from there without measuring."""
    code = ("import fastbp; from fastbp import _blas; print(_blas.info()['provider'])")
    r1 = _child(code, FASTBP_BLAS="auto", XDG_CACHE_HOME=str(tmp_path))
    assert r1.returncode == 0, r1.stderr
    cache = tmp_path / "fastbp" / "blas-choice.json"
    if len(_blas.available()) == 1:
        assert not cache.exists() and r1.stdout.strip() == "openblas"
        return
    saved = json.loads(cache.read_text())
    assert saved["choice"] == r1.stdout.strip()
    assert set(saved["seconds"]) == set(_blas.available())
    # a forged choice under the same key is what the next process uses
    other = "mkl" if saved["choice"] == "openblas" else "openblas"
    cache.write_text(json.dumps(dict(saved, choice=other)))
    r2 = _child(code, FASTBP_BLAS="auto", XDG_CACHE_HOME=str(tmp_path))
    assert r2.stdout.strip() == other, r2.stderr
    cache.write_text("{not json")  # a torn or foreign file: measured again
    r3 = _child(code, FASTBP_BLAS="auto", XDG_CACHE_HOME=str(tmp_path))
    assert r3.returncode == 0 and r3.stdout.strip() in _blas.available(), r3.stderr


def test_show_config_names_the_provider_and_the_installed_ones(capsys):
    fastbp.show_config()
    out = capsys.readouterr().out
    assert f"BLAS:    {fastbp.get_blas()} (" in out
    assert "installed: " + ", ".join(_blas.available()) in out


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mkl_gives_the_same_step_within_rounding_and_is_deterministic(dtype, restore_blas,
                                                                      restore_threads):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 70)).astype(dtype)
    y = rng.integers(0, 10, 300)

    def fit(name, threads):
        fastbp.set_blas(name)
        fastbp.set_num_threads(threads)
        m = fastbp.MLP([70, 600, 10], "relu", dtype=dtype, seed=1)
        for _ in range(3):
            m.train_step(x, y, lr=0.1)
        return m.params

    ob, mk1, mk2 = fit("openblas", 2), fit("mkl", 1), fit("mkl", 2)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for k in ob:
        np.testing.assert_array_equal(mk1[k], mk2[k])  # any thread count, same bits
        np.testing.assert_allclose(mk1[k], ob[k], rtol=tol, atol=tol)


@needs_mkl
def test_threadpoolctl_cannot_nest_mkl_threads_in_the_pool(restore_blas):
    from threadpoolctl import threadpool_limits

    fastbp.set_blas("mkl")
    x = np.ones((64, 64), np.float32)
    with threadpool_limits(limits=4, user_api="blas"):
        fastbp.dense_forward(x, x, None)
        assert _blas.info()["threads"] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_floor_times_the_products(dtype):
    small = fastbp._core.StepFloor([64, 128, 10], 32, dtype)
    big = fastbp._core.StepFloor([256, 512, 512], 128, dtype, n_state=1000)
    assert 0 < small.run(3) < big.run(3, threads=2)
    assert small() is None
    with pytest.raises(ValueError, match="expected 2 to 65 widths"):
        fastbp._core.StepFloor([5], 3, dtype)
    with pytest.raises(ValueError, match="expected positive sizes"):
        fastbp._core.StepFloor([5, 0], 3, dtype)
    with pytest.raises(TypeError, match="float32 or float64"):
        fastbp._core.StepFloor([5, 5], 3, np.int32)
    with pytest.raises(ValueError, match="reps >= 1"):
        small.run(0)
