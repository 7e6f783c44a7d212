"""Hostile inputs to the newer surfaces (issue 25), drawn by hypothesis: damaged
and crafted checkpoint files, resume arguments (schedules, total_epochs, early
stopping, save and load between fits), schedules at huge epochs, fit's
controls and weights, the estimators' n_threads and weights, communicators,
and the command line's values.

Each property says what must happen: the call works, or raises the documented
error (ValueError or TypeError, with a message) and changes nothing. Any other
exception fails. The whole file runs in well under 20 s (derandomized, so CI
sees the same examples every run).
"""
import io
import math
import shutil
import warnings
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from fastbp import MLP, optim  # noqa: E402
from fastbp._checkpoint import MAX_COUNT  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
SIZES = [4, 6, 3]


def data(n=24):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, SIZES[0]))
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)


def snapshot(m):
    """What a refused call must leave as it was."""
    es = m.early_stopping_state
    return (m.get_params(), m.step_, m.epoch_, m.lr_schedule_, list(m.had_validation_),
            list(m.loss_curve_), None if es is None else (es["best"], es["wait"]),
            m.optimizer_state["t"])


def same(a, b):
    pa, *ra = a
    pb, *rb = b
    return all(np.array_equal(pa[k], pb[k]) for k in pa) and repr(ra) == repr(rb)


def trained_file(tmp_path):
    """A checkpoint with every member: Adam state, curves, flags, a plan and an
    early-stopping run."""
    X, y = data()
    m = MLP(SIZES, "relu", dtype=np.float64, seed=1)
    m.fit(X, y, epochs=3, batch_size=8, optimizer=optim.Adam(0.01), lr_schedule="cosine",
          total_epochs=6, early_stopping=True, validation_fraction=0.25, restore_best=False)
    assert m.early_stopping_state is not None and m.lr_schedule_ == ("cosine", 6)
    return m.save(tmp_path / "good.npz")


# ---- damaged and crafted checkpoint files ---------------------------------------------

def members(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


ARRAYS = st.one_of(
    st.just(np.zeros(0)), st.just(np.int64(2**63 - 1)), st.just(np.int64(-1)),
    st.just(np.float64(np.nan)), st.just(np.float64(np.inf)), st.just(np.str_("cosine")),
    st.just(np.str_("")), st.just(np.ones((2, 2, 2))), st.just(np.array([True, False])),
    st.just(np.zeros(3, np.float32)), st.just(np.uint64(2**64 - 1)), st.just(np.int64(0)),
    st.builds(lambda n: np.arange(n, dtype=np.int64), st.integers(0, 5)))


def load_outcome(path):
    """MLP.load(path): the model, or the ValueError it raised (anything else fails)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # NaN parameters warn
        try:
            return MLP.load(path)
        except ValueError as e:
            assert str(path) in str(e), e                   # names the file
            return e


def check_loaded(model, tmp_path):
    """A model that loaded has bounded counters, and its own save loads again."""
    if isinstance(model, Exception):
        return
    assert 0 <= model.step_ <= MAX_COUNT and 0 <= model.epoch_ <= MAX_COUNT
    assert 0 <= model.optimizer_state["t"] <= MAX_COUNT
    assert len(model.had_validation_) == len(model.loss_curve_) <= model.epoch_
    again = MLP.load(model.save(tmp_path / "again.npz"))
    assert snapshot(again)[1:] == snapshot(model)[1:] or repr(snapshot(again)[1:]) == repr(
        snapshot(model)[1:])


@SETTINGS
@given(ops=st.lists(st.tuples(st.sampled_from(["flip", "truncate", "zero"]),
                              st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=4))
def test_a_damaged_file_loads_or_is_a_value_error(tmp_path, ops):
    src = tmp_path / "good.npz"
    if not src.exists():
        trained_file(tmp_path)
    raw = bytearray(src.read_bytes())
    for op, where, byte in ops:
        if not raw:
            break
        i = min(int(where * len(raw)), len(raw) - 1)
        if op == "flip":
            raw[i] ^= byte
        elif op == "truncate":
            raw = raw[:i]
        else:
            raw[i:i + 16] = bytes(len(raw[i:i + 16]))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    check_loaded(load_outcome(bad), tmp_path)


MEMBER_NAMES = ["sizes", "dtype", "activation", "loss", "W1", "b2", "seed", "step", "epoch",
                "optimizer", "optimizer_t", "state_vW1", "state_sb2", "loss_curve",
                "val_loss_curve", "had_validation", "lr_schedule", "lr_schedule_epochs",
                "es_best", "es_wait", "es_best_epoch", "es_W1", "es_b2", "dropout"]


@SETTINGS
@given(changes=st.lists(st.tuples(st.sampled_from(MEMBER_NAMES),
                                  st.one_of(st.none(), ARRAYS)), min_size=1, max_size=3),
       compressed=st.booleans())
def test_a_crafted_file_loads_or_is_a_value_error(tmp_path, changes, compressed):
    """Members dropped (None) or replaced by arrays of other shapes, dtypes and
    values; deflated or stored."""
    src = tmp_path / "good.npz"
    if not src.exists():
        trained_file(tmp_path)
    arrays = members(src)
    for name, value in changes:
        if value is None:
            arrays.pop(name, None)
        else:
            arrays[name] = value
    bad = tmp_path / "crafted.npz"
    (np.savez_compressed if compressed else np.savez)(bad, **arrays)
    check_loaded(load_outcome(bad), tmp_path)


def test_a_crafted_zip_with_odd_members_is_a_value_error(tmp_path):
    """Not .npy data where .npy members are expected, and names with no .npy."""
    src = trained_file(tmp_path)
    for junk in (b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00\xff\xff", b"PK\x03\x04" * 10):
        out = io.BytesIO()
        with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w") as w:
            for n in z.namelist():
                w.writestr(n, junk if n == "W1.npy" else z.read(n))
        bad = tmp_path / "junk.npz"
        bad.write_bytes(out.getvalue())
        assert isinstance(load_outcome(bad), ValueError)


# ---- resume arguments -------------------------------------------------------------------

SCHEDULES = st.sampled_from([None, "constant", "step", "cosine", "plateau", "invscaling",
                             "linear", 3, optim.StepLR(1, 2.0), optim.CosineAnnealingLR(3)])
FIT = st.fixed_dictionaries({
    "epochs": st.sampled_from([1, 2, 3, 0, -1, True, 2.0]),
    "lr_schedule": SCHEDULES,
    "total_epochs": st.sampled_from([None, None, 1, 3, 6, 10, 0, -2, 2.5, True]),
    "early_stopping": st.booleans(),
    "restore_best": st.booleans(),
    "patience": st.sampled_from([1, 2, 0]),
    "min_delta": st.sampled_from([0.0, 1e-3, math.nan, -1.0, math.inf]),
})


@SETTINGS
@given(fits=st.lists(st.tuples(FIT, st.booleans()), min_size=1, max_size=4))
def test_resume_arguments_train_or_refuse_without_a_change(tmp_path, fits):
    """Any sequence of fits (with a save and load between some): each trains,
    or raises ValueError/TypeError leaving the model as it was; a trained
    model's plan, flags and early-stopping run survive a save and load."""
    X, y = data()
    m = MLP(SIZES, "relu", dtype=np.float64, seed=2)
    for kw, reload in fits:
        before = snapshot(m)
        try:
            m.fit(X, y, batch_size=8, lr=0.05, validation_fraction=0.25, **kw)
        except (ValueError, TypeError) as e:
            assert str(e).startswith(("fit: ", "lr_schedule: ")), e
            assert same(snapshot(m), before), kw
            continue
        if kw["lr_schedule"] in ("step", "cosine"):
            assert m.lr_schedule_[0] == kw["lr_schedule"]
            assert m.lr_schedule_[1] >= m.epoch_
        else:
            assert m.lr_schedule_ is None
        if reload:
            back = MLP.load(m.save(tmp_path / "r.npz"))
            assert same(snapshot(back), snapshot(m))
            es, bes = m.early_stopping_state, back.early_stopping_state
            if es is not None and es["best_params"] is not None:
                assert all(np.array_equal(es["best_params"][k], bes["best_params"][k])
                           for k in es["best_params"])
            m = back


# ---- schedules at any epoch -----------------------------------------------------------

@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(step=st.integers(1, 10**6), gamma=st.floats(0, 1e6), power=st.floats(0, 1e6),
       t_max=st.integers(1, 10**9), epoch=st.integers(0, MAX_COUNT),
       base=st.floats(0, 1e308))
def test_history_free_schedules_never_raise_and_never_give_nan(step, gamma, power, t_max,
                                                                epoch, base):
    for s in (optim.StepLR(step, gamma), optim.InverseScalingLR(power),
              optim.CosineAnnealingLR(t_max), optim.ConstantLR()):
        lr = s.lr(epoch, base, {})
        assert lr >= 0, (s, epoch, base, lr)             # never NaN; inf only past the range


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(losses=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30),
       flags=st.lists(st.booleans(), max_size=30), factor=st.floats(0.01, 0.99),
       patience=st.integers(0, 3), cooldown=st.integers(0, 2))
def test_plateau_never_raises_and_stays_between_min_lr_and_base(losses, flags, factor, patience,
                                                                cooldown):
    s = optim.ReduceLROnPlateau(factor=factor, patience=patience, cooldown=cooldown,
                                min_lr=1e-4)
    hist = {"loss": losses, "val_loss": losses[::-1], "had_validation": flags[:len(losses)]}
    lr = s.lr(len(losses), 0.1, hist)
    assert 1e-4 <= lr <= 0.1


# ---- fit's weights and controls -------------------------------------------------------

WEIGHT = st.sampled_from([0.0, 1.0, 1e-50, 1e-30, 1e30, 1e39, 1e300, -1.0, math.nan, math.inf])


@SETTINGS
@given(w=st.lists(WEIGHT, min_size=24, max_size=24), dtype=st.sampled_from([np.float32,
                                                                          np.float64]),
       early=st.booleans(), cw=st.sampled_from([None, "balanced", {0: 1e300}, {1: 0.0},
                                                {2: -1.0}]))
def test_weights_train_or_are_refused_before_any_step(w, dtype, early, cw):
    X, y = data()
    m = MLP(SIZES, "relu", dtype=dtype, seed=3)
    before = snapshot(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # no stray overflow warnings, no bare errors
        try:
            h = m.fit(X.astype(dtype), y, epochs=2, batch_size=8, lr=0.05,
                      sample_weight=np.array(w), class_weight=cw, early_stopping=early,
                      validation_fraction=0.25)
        except ValueError as e:
            assert str(e).startswith("fit: "), e
            assert same(snapshot(m), before)
            return
    assert all(math.isfinite(v) for v in h["loss"])


# ---- estimators, communicators, the command line --------------------------------------

@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(n=st.sampled_from([0, -1, 4097, 10**9, 1.5, True, "2", 1, 4096, None]))
def test_estimator_n_threads_is_validated_or_used(n):
    pytest.importorskip("sklearn")
    import fastbp
    from fastbp.sklearn import MLPRegressor

    X, y = data()
    before = fastbp.get_num_threads()
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=1, n_threads=n)
    ok = n is None or (type(n) is int and 1 <= n <= 4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ok:
            est.fit(X, y.astype(float)).predict(X)
        else:
            with pytest.raises((ValueError, TypeError), match="'n_threads' parameter"):
                est.fit(X, y.astype(float))
    assert fastbp.get_num_threads() == before


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(comm=st.sampled_from([object(), 1, "COMM_WORLD", [], {"Get_rank": 0}, 1.5]))
def test_a_non_communicator_is_a_type_error_everywhere(comm):
    X, y = data()
    m = MLP(SIZES, dtype=np.float64)
    before = snapshot(m)
    for call in (lambda: m.fit(X, y, epochs=1, comm=comm),
                 lambda: m.train_step(X, y, lr=0.1, comm=comm)):
        with pytest.raises(TypeError, match="comm must be an mpi4py communicator"):
            call()
    assert same(snapshot(m), before)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(option=st.sampled_from(["--epochs", "--batch-size", "--lr", "--threads", "--momentum",
                               "--weight-decay", "--seed", "--hidden"]),
       value=st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "1e400", "4097", "1.5", "",
                                        "0x10", " 3", "1_000", "٣"]),
                       st.text(max_size=6)))
def test_cli_values_parse_or_are_usage_errors(option, value):
    """Every train option's value parses to what the option allows or is
    argparse's usage error (exit 2), never another exception."""
    from fastbp.__main__ import build_parser

    parser = build_parser("fastbp")
    parser.error = lambda msg: (_ for _ in ()).throw(SystemExit(2))
    try:
        args = parser.parse_args(["train", option, value])
    except SystemExit as e:
        assert e.code == 2
        return
    got = getattr(args, option[2:].replace("-", "_"))
    if option in ("--epochs", "--batch-size", "--threads"):
        assert isinstance(got, int) and got >= 1
    if option in ("--lr", "--momentum", "--weight-decay"):
        assert math.isfinite(got) and got >= 0
