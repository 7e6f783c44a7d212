"""MLP.fit's controls: learning-rate schedules (against their formulas and
torch.optim.lr_scheduler), early stopping (a given validation set or a held-out
stratified fraction; patience, min_delta, restore_best), callbacks, the input
checks made once before training, and the divergence warning."""

import math
import warnings

import numpy as np
import pytest

import fastbp.model
from fastbp import MLP, optim

from conftest import raises

SIZES = [4, 8, 3]


def data(n=40, seed=0, C=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0]))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)  # learnable labels in [0, 3)
    return X, np.minimum(y, C - 1)


def model(seed=0, dtype=np.float64, loss="softmax_cross_entropy", sizes=SIZES):
    return MLP(sizes, "tanh", loss, dtype=dtype, seed=seed)


def params_equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def torch_lrs(torch, make, epochs, losses=None):
    """The lr of each epoch under torch scheduler make(optimizer), stepped once per
    epoch (with that epoch's loss for ReduceLROnPlateau)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make(opt)
    out = []
    for e in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(losses[e]) if losses is not None else sched.step()
    return out


# ---------------------------------------------------------------------------
# learning-rate schedules
# ---------------------------------------------------------------------------

E = 9


@pytest.mark.parametrize("schedule, want", [
    (None, lambda e: 0.1),
    ("constant", lambda e: 0.1),
    ("step", lambda e: 0.1 * 0.1 ** (e // 3)),                 # step_size = epochs // 3
    ("cosine", lambda e: 0.1 * (1 + math.cos(math.pi * e / E)) / 2),  # T_max = epochs
    ("invscaling", lambda e: 0.1 / (e + 1) ** 0.5),
    (optim.StepLR(2, gamma=0.5), lambda e: 0.1 * 0.5 ** (e // 2)),
    (optim.CosineAnnealingLR(4, eta_min=0.01),
     lambda e: 0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2),
    (optim.InverseScalingLR(0.25), lambda e: 0.1 / (e + 1) ** 0.25),
    (optim.ConstantLR(), lambda e: 0.1),
    (lambda e: 0.05 / (1 + e), lambda e: 0.05 / (1 + e)),
    (optim.LambdaLR(lambda e: 0.02 * (e % 3 + 1)), lambda e: 0.02 * (e % 3 + 1)),
], ids=["none", "constant", "step", "cosine", "invscaling", "StepLR", "Cosine", "InvScaling",
        "ConstantLR", "callable", "LambdaLR"])
def test_schedule_formulas_and_the_steps_use_them(schedule, want):
    """history["lr"] follows the formula, and each epoch's steps use that rate:
    the fit equals one-epoch fits with plain SGD at the recorded rates."""
    X, y = data()
    a = model()
    h = a.fit(X, y, epochs=E, batch_size=16, lr=0.1, lr_schedule=schedule)
    np.testing.assert_allclose(h["lr"], [want(e) for e in range(E)], rtol=1e-14, atol=1e-17)
    b = model()
    for e in range(E):
        b.fit(X, y, epochs=1, batch_size=16, lr=h["lr"][e])
    assert params_equal(a.params, b.params)
    assert a.epoch_ == b.epoch_ == E


def test_plateau_by_name_reads_the_history():
    """"plateau" is ReduceLROnPlateau(): with patience 10 it cannot cut within 9
    epochs; each epoch's rate is the rule replayed on the losses before it."""
    X, y = data()
    m = model()
    sched = optim.ReduceLROnPlateau(factor=0.5, patience=0, threshold=0.5)
    h = m.fit(X, y, epochs=6, batch_size=16, lr=0.1, lr_schedule=sched, validation=(X, y))
    for e in range(6):
        seen = {k: v[:e] for k, v in h.items()}
        assert h["lr"][e] == sched.lr(e, 0.1, seen)
    assert h["lr"][-1] < 0.1  # threshold 0.5: every epoch is a plateau
    h = model().fit(X, y, epochs=E, batch_size=16, lr=0.1, lr_schedule="plateau")
    assert h["lr"] == [0.1] * E


def test_schedule_counts_the_models_epochs():
    """A second fit continues the schedule (epochs over the model's life)."""
    X, y = data()
    m = model()
    h1 = m.fit(X, y, epochs=2, lr=0.1, lr_schedule=optim.StepLR(2, 0.5))
    h2 = m.fit(X, y, epochs=2, lr=0.1, lr_schedule=optim.StepLR(2, 0.5))
    assert h1["lr"] == [0.1, 0.1] and h2["lr"] == [0.05, 0.05]


def test_step_and_cosine_match_torch():
    torch = pytest.importorskip("torch")
    lr = torch.optim.lr_scheduler
    X, y = data()
    for ours, theirs, epochs in (
            (optim.StepLR(3, gamma=0.3), lambda o: lr.StepLR(o, 3, gamma=0.3), 10),
            (optim.CosineAnnealingLR(5, eta_min=0.001),
             lambda o: lr.CosineAnnealingLR(o, T_max=5, eta_min=0.001), 13)):  # past T_max
        h = model().fit(X, y, epochs=epochs, batch_size=20, lr=0.1, lr_schedule=ours)
        np.testing.assert_allclose(h["lr"], torch_lrs(torch, theirs, epochs), rtol=0,
                                   atol=1e-13)


PLATEAU_LOSSES = [1.0, 0.9, 0.9, 0.91, 0.95, 0.5, 0.5, 0.4999, 0.6, 0.7, 0.8, 0.3, 0.3, 0.3,
                  0.3, 0.3, 0.3, 0.3, 0.3, 0.3]


@pytest.mark.parametrize("kw", [dict(), dict(factor=0.5, patience=1),
                                dict(factor=0.5, patience=2, cooldown=2, threshold=1e-3),
                                dict(factor=0.2, patience=0, min_lr=0.005)], ids=str)
def test_plateau_matches_torch(kw):
    """The same loss sequence fed to torch's ReduceLROnPlateau gives the same lr
    per epoch (mode min, relative threshold)."""
    torch = pytest.importorskip("torch")
    sched = optim.ReduceLROnPlateau(**kw)
    tkw = {("min_lr" if k == "min_lr" else k): v for k, v in kw.items()}
    want = torch_lrs(torch, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **tkw),
                     len(PLATEAU_LOSSES), PLATEAU_LOSSES)
    got = [sched.lr(e, 0.1, {"loss": PLATEAU_LOSSES[:e]}) for e in range(len(PLATEAU_LOSSES))]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    if kw:
        assert min(got) < 0.1  # the sequence does cut the rate
    # val_loss, when the history has it, is what it watches
    hist = {"loss": [1.0] * 20, "val_loss": PLATEAU_LOSSES}
    assert sched.lr(20, 0.1, hist) == sched.lr(20, 0.1, {"loss": PLATEAU_LOSSES})


@pytest.mark.parametrize("bad, exc, msg", [
    ("linear", ValueError, "lr_schedule: unknown schedule 'linear'; expected one of 'constant', "
                           "'step', 'cosine', 'invscaling', 'plateau'"),
    (3, TypeError, "lr_schedule: expected a name, a callable or a fastbp.optim schedule, got int"),
    (lambda e: -0.1, ValueError, "fit: the schedule gave lr -0.1 at epoch 0"),
    (lambda e: float("nan"), ValueError, "fit: the schedule gave lr nan at epoch 0"),
])
def test_bad_schedules(bad, exc, msg):
    X, y = data()
    m = model()
    before = m.get_params()
    with raises(exc, msg):
        m.fit(X, y, epochs=2, lr=0.1, lr_schedule=bad)
    assert params_equal(m.params, before) and m.epoch_ == 0 and m.step_ == 0


@pytest.mark.parametrize("make, msg", [
    (lambda: optim.StepLR(0), "StepLR: step_size must be an integer >= 1, got 0"),
    (lambda: optim.StepLR(2, gamma=-1), "StepLR: gamma must be 0.0 <= gamma"),
    (lambda: optim.CosineAnnealingLR(2.5), "CosineAnnealingLR: T_max must be an integer >= 1"),
    (lambda: optim.ReduceLROnPlateau(factor=1.0), "factor must be 0.0 < factor < 1.0, got 1.0"),
    (lambda: optim.ReduceLROnPlateau(patience=-1), "patience must be an integer >= 0, got -1"),
    (lambda: optim.InverseScalingLR(-0.5), "InverseScalingLR: power_t must be 0.0 <= power_t"),
])
def test_schedule_argument_checks(make, msg):
    with raises(ValueError, msg):
        make()
    with raises(TypeError, "LambdaLR: fn must be callable, got 0.1"):
        optim.LambdaLR(0.1)


# ---------------------------------------------------------------------------
# early stopping and callbacks
# ---------------------------------------------------------------------------

def stopping_epoch(val_losses, patience, min_delta):
    """The rule replayed: (epochs run, best epoch)."""
    best, wait, best_e = math.inf, 0, None
    for e, v in enumerate(val_losses):
        if v < best - min_delta:
            best, wait, best_e = v, 0, e
        else:
            wait += 1
            if wait >= patience:
                return e + 1, best_e
    return len(val_losses), best_e


class Snapshots:
    """A callback keeping the parameters after every epoch."""

    def __init__(self):
        self.params, self.calls = [], []

    def __call__(self, model, epoch, history):
        self.params.append(model.get_params())
        self.calls.append((epoch, len(history["loss"])))


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_on_a_validation_set_and_restore_best(restore):
    """A validation set whose labels disagree with training's: its loss gets
    worse as training goes on, so training stops after patience epochs, and
    restore_best puts back the best epoch's parameters exactly."""
    X, y = data()
    yv = (y + 1) % 3
    m, snap = model(), Snapshots()
    h = m.fit(X, y, epochs=30, batch_size=8, lr=0.2, validation=(X, yv), early_stopping=True,
              patience=3, restore_best=restore, callbacks=[snap])
    ran, best = stopping_epoch(h["val_loss"], 3, 0.0)
    assert len(h["loss"]) == ran < 30 and m.epoch_ == ran
    assert h["val_loss"][best] == min(h["val_loss"])
    want = snap.params[best] if restore else snap.params[-1]
    assert params_equal(m.params, want)
    assert best != ran - 1 and not params_equal(snap.params[best], snap.params[-1])


def test_early_stopping_patience_and_min_delta():
    X, y = data()
    for patience, min_delta in ((1, 0.0), (4, 0.0), (2, 1e-3), (3, 1e9)):
        h = model().fit(X, y, epochs=25, batch_size=8, lr=0.05, validation=data(30, seed=1),
                        early_stopping=True, patience=patience, min_delta=min_delta)
        ran, _ = stopping_epoch(h["val_loss"], patience, min_delta)
        assert len(h["val_loss"]) == ran, (patience, min_delta)
        if min_delta == 1e9:  # nothing after the first epoch counts as better
            assert ran == patience + 1


def test_early_stopping_holds_out_a_stratified_fraction():
    """Without a validation set, early stopping trains on the rest of X and
    validates on a fraction of each class, drawn from the seed: the same fit as
    with that split given explicitly."""
    X, y = data(60)
    m = model()
    Xt, yt, _, Xv, yv = m._hold_out(X, y, None, 0.2, 7)
    counts = np.bincount(y, minlength=3)
    np.testing.assert_array_equal(np.bincount(yv, minlength=3), np.round(0.2 * counts))
    assert len(yt) + len(yv) == 60
    assert sorted(map(tuple, np.c_[Xt, yt].tolist() + np.c_[Xv, yv].tolist())) == \
        sorted(map(tuple, np.c_[X, y].tolist()))
    a, b = model(), model()
    ha = a.fit(X, y, epochs=6, lr=0.1, seed=7, early_stopping=True, validation_fraction=0.2,
               patience=2)
    hb = b.fit(Xt, yt, epochs=6, lr=0.1, seed=7, validation=(Xv, yv), early_stopping=True,
               patience=2)
    assert ha == hb and params_equal(a.params, b.params)
    # regression: a plain random fraction
    Xr = np.random.default_rng(2).standard_normal((30, 4))
    r = model(loss="mse")
    _, _, _, Xv, _ = r._hold_out(Xr, Xr[:, :3], None, 0.1, 0)
    assert len(Xv) == 3
    h = r.fit(Xr, Xr[:, :3], epochs=3, lr=0.05, early_stopping=True, patience=5)
    assert len(h["val_loss"]) == 3 and "val_r2" in h


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1e-6])
def test_bad_validation_fraction(fraction):
    X, y = data(10)
    m = model()
    with pytest.raises(ValueError, match="validation_fraction"):
        m.fit(X, y, epochs=1, early_stopping=True, validation_fraction=fraction)
    assert m.step_ == 0


def test_callbacks_after_every_epoch_and_stopping():
    X, y = data()
    m, snap = model(), Snapshots()
    m.fit(X, y, epochs=3, lr=0.1, callbacks=[snap])
    assert snap.calls == [(0, 1), (1, 2), (2, 3)]
    # epochs are the model's: a second fit goes on counting
    stopper = lambda model, epoch, history: epoch >= 4  # noqa: E731
    h = m.fit(X, y, epochs=10, lr=0.1, callbacks=[snap, stopper])
    assert snap.calls[3:] == [(3, 1), (4, 2)] and len(h["loss"]) == 2 and m.epoch_ == 5
    # every callback runs, also after one asks to stop; a falsy answer goes on
    seen = []
    h = m.fit(X, y, epochs=3, lr=0.1, callbacks=[lambda *a: True, lambda *a: seen.append(a[1])])
    assert seen == [5] and len(h["loss"]) == 1
    h = m.fit(X, y, epochs=2, lr=0.1, callbacks=[lambda *a: None, lambda *a: 0])
    assert len(h["loss"]) == 2

    def boom(model, epoch, history):
        raise RuntimeError("from the callback")

    with raises(RuntimeError, "from the callback"):
        m.fit(X, y, epochs=3, lr=0.1, callbacks=[boom])
    assert len(m.history_["loss"]) == 1 and m.epoch_ == 9  # the epoch ran and is kept


# ---------------------------------------------------------------------------
# inputs checked once, before training
# ---------------------------------------------------------------------------

def _with(a, idx, v):
    a = np.array(a, dtype=np.float64 if a.dtype.kind == "f" else a.dtype)
    a[idx] = v
    return a


@pytest.mark.parametrize("case, exc, msg", [
    (lambda X, y, v: (_with(X, (5, 1), np.nan), y, {}), ValueError, "fit: X holds NaN or inf (row 5)"),
    (lambda X, y, v: (_with(X, (9, 0), -np.inf), y, {}), ValueError, "fit: X holds NaN or inf (row 9)"),
    (lambda X, y, v: (X, _with(y, 3, 3), {}), ValueError,
     "fit: labels must be in [0, 3), got values in [0, 3]"),
    (lambda X, y, v: (X, _with(y, 3, -1), {}), ValueError, "fit: labels must be in [0, 3)"),
    (lambda X, y, v: (X, y.astype(np.float64), {}), TypeError,
     "fit: class labels must be integers, got dtype float64"),
    (lambda X, y, v: (X, y[:-1], {}), ValueError, "fit: X has 40 rows but y has 39"),
    (lambda X, y, v: (X[:, :3], y, {}), ValueError, "fit: X must have shape (n, 4), got (40, 3)"),
    (lambda X, y, v: (X, y, {"validation": (_with(v[0], (2, 2), np.nan), v[1])}), ValueError,
     "fit (validation): X holds NaN or inf (row 2)"),
    (lambda X, y, v: (X, y, {"validation": (v[0], _with(v[1], 0, 7))}), ValueError,
     "fit (validation): labels must be in [0, 3), got values in [0, 7]"),
    (lambda X, y, v: (X, y, {"validation": v[0]}), ValueError,
     "fit: validation must be a pair (X, y)"),
    (lambda X, y, v: (X, y, {"sample_weight": _with(np.ones(40), 0, np.inf)}), ValueError,
     "fit: sample_weight must be finite and >= 0"),
], ids=["X-nan", "X-inf", "label-high", "label-neg", "float-labels", "short-y", "X-width",
        "val-X-nan", "val-label", "val-not-pair", "weight-inf"])
def test_inputs_checked_before_training(case, exc, msg):
    X, y = data()
    Xb, yb, kw = case(X, y, data(10, seed=3))
    m = model()
    m.fit(X, y, epochs=1, lr=0.1, optimizer=None, momentum=0.9)
    before, hist = m.get_params(), m.history_
    state = [v.copy() for v in m.optimizer_state["vW"]]
    with raises(exc, msg):
        m.fit(Xb, yb, epochs=2, lr=0.1, momentum=0.9, **kw)
    assert params_equal(m.params, before) and m.history_ is hist
    assert m.step_ == 2 and m.epoch_ == 1
    assert all(np.array_equal(a, b) for a, b in zip(m.optimizer_state["vW"], state))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_regression_targets_checked(bad):
    X = np.random.default_rng(0).standard_normal((12, 4))
    t = _with(np.zeros((12, 3)), (4, 1), bad)
    m = model(loss="mse")
    with raises(ValueError, "fit: y holds NaN or inf"):
        m.fit(X, t, epochs=1)
    with raises(ValueError, "fit (validation): y holds NaN or inf"):
        m.fit(X, np.zeros((12, 3)), epochs=1, validation=(X, t))
    assert m.step_ == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_divergence_warns_with_the_epoch_and_stops(dtype):
    X, y = data()
    m = model(dtype=dtype, loss="mse")
    t = np.tile(X[:, :1], (1, 3)) * 100
    with pytest.warns(RuntimeWarning, match=r"fit: the loss diverged \((nan|inf)\) at epoch "
                                            r"(\d+) of this fit .*training stopped") as rec:
        h = m.fit(X, t, epochs=50, batch_size=8, lr=10.0, shuffle=False)
    # epochs counted from 1, as the history counts them (and the epoch lines)
    epoch = int(str(rec[0].message).split("at epoch ")[1].split(" ")[0])
    assert isinstance(rec[0].message, fastbp.model.DivergedWarning)
    assert rec[0].message.epoch == epoch and rec[0].filename == __file__
    assert len(h["loss"]) == epoch < 50 and m.epoch_ == epoch
    assert not math.isfinite(h["loss"][-1]) and all(map(math.isfinite, h["loss"][:-1]))
    # the diverged model is refused, not silently NaN: a later fit, and predict
    with pytest.raises(ValueError, match="fit: the model's parameter '?W.'? holds NaN or inf"):
        m.fit(X, t, epochs=1)
    with pytest.raises(ValueError, match="predict: the model's parameter W. holds NaN or inf"):
        m.predict(X)
    # a sane rate gives no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(dtype=dtype, loss="mse").fit(X, t / 100, epochs=3, lr=0.01)


def test_verbose_1_leaves_one_line_per_epoch(capsys):
    X, y = data()
    m = model()
    m.fit(X, y, epochs=3, batch_size=8, lr=0.1, verbose=1, validation=(X[:10], y[:10]))
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3 and captured.err == ""
    pattern = (r"Epoch (\d)/3 - loss: \d\.\d{4} - accuracy: \d\.\d{4} - val_loss: \d\.\d{4} - "
               r"val_accuracy: \d\.\d{4} - \d+ms$")
    import re
    assert [re.match(pattern, l).group(1) for l in lines] == ["1", "2", "3"], lines
    assert f"loss: {m.history_['loss'][1]:.4f}" in lines[1]
    # True is 1; 0 and False print nothing; 2 draws a bar (on stderr) that stays
    m.fit(X, y, epochs=2, lr=0.1, verbose=True)
    assert len(capsys.readouterr().out.splitlines()) == 2
    m.fit(X, y, epochs=2, lr=0.1, verbose=0)
    assert capsys.readouterr() == ("", "")
    m.fit(X, y, epochs=2, lr=0.1, verbose=2)
    c = capsys.readouterr()
    assert c.out == "" and "2/2" in c.err and c.err.endswith("\n")
    with pytest.raises(ValueError, match="verbose must be 0, 1, 2 or a bool, got 3"):
        m.fit(X, y, epochs=1, verbose=3)

# ---------------------------------------------------------------------------
# issue 25: NaN validation losses, overflow-proof schedules, weights as used
# ---------------------------------------------------------------------------

NAN = float("nan")
NAN_VAL = [1.0, 0.9, 0.95, NAN, 0.97, NAN, 0.5, 0.6, NAN, NAN, NAN, 0.4, 0.45, 0.47]


@pytest.mark.parametrize("kw", [dict(factor=0.5, patience=1), dict(factor=0.5, patience=0),
                                dict(factor=0.2, patience=1, cooldown=1)], ids=str)
def test_plateau_counts_a_nan_validation_loss_as_a_bad_epoch_as_torch(kw):
    """One NaN val_loss made the rule replay the whole history on the training
    loss (below: always improving), so a reduced rate jumped back to base_lr;
    torch counts a NaN as no improvement and keeps the rate reduced.
    had_validation tells "no validation set" from "a NaN validation loss"."""
    torch = pytest.importorskip("torch")
    sched = optim.ReduceLROnPlateau(**kw)
    want = torch_lrs(torch, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kw),
                     len(NAN_VAL), NAN_VAL)
    train = [1.0 / (e + 1) for e in range(len(NAN_VAL))]
    got = [sched.lr(e, 0.1, {"loss": train[:e], "val_loss": NAN_VAL[:e],
                             "had_validation": [True] * e}) for e in range(len(NAN_VAL))]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert min(got) < 0.1
    # an epoch without a validation set (had_validation False) still means: watch loss
    hist = {"loss": train, "val_loss": [NAN] + NAN_VAL[1:],
            "had_validation": [False] + [True] * (len(NAN_VAL) - 1)}
    assert sched.lr(len(train), 0.1, hist) == sched.lr(len(train), 0.1, {"loss": train})


def test_a_fit_whose_validation_loss_is_nan_keeps_its_rate_reduced(tmp_path):
    """A validation set that overflows float32 gives val_loss NaN every epoch:
    the plateau rule cuts the rate as torch's would (before, it watched the
    falling training loss instead and never cut); the flags are kept and saved."""
    torch = pytest.importorskip("torch")
    X, y = data()
    Xv = np.full((6, SIZES[0]), 3e38, np.float32)
    m = MLP(SIZES, "relu", dtype=np.float32, seed=1)
    kw = dict(factor=0.5, patience=1)
    h = m.fit(X.astype(np.float32), y, epochs=6, batch_size=8, lr=0.1,
              validation=(Xv, y[:6]), lr_schedule=optim.ReduceLROnPlateau(**kw))
    assert all(math.isnan(v) for v in h["val_loss"]) and m.had_validation_ == [True] * 6
    want = torch_lrs(torch, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kw), 6,
                     h["val_loss"])
    assert h["lr"] == want and want[-1] < 0.1
    back = MLP.load(m.save(tmp_path / "m"))
    assert back.had_validation_ == [True] * 6
    m.fit(X.astype(np.float32), y, epochs=1, lr=0.1)
    assert m.had_validation_ == [True] * 6 + [False]


def test_step_lr_with_gamma_above_1_cannot_overflow():
    """gamma ** k overflowed (OverflowError mid-fit, after epochs had trained)
    even where base_lr * gamma ** k is finite."""
    s = optim.StepLR(1, gamma=2.0)
    assert s.lr(1100, 2.0 ** -1074, {}) == pytest.approx(2.0 ** 26, rel=1e-12)  # 2**1100 alone
    # overflows; from logarithms there
    assert s.lr(10, 0.1, {}) == 0.1 * 2.0 ** 10                     # exact where it was
    assert s.lr(5000, 1e-300, {}) == math.inf                        # past the range itself
    assert optim.StepLR(1, gamma=0.5).lr(10**9, 0.1, {}) == 0.0     # underflow is 0
    assert optim.InverseScalingLR(1000.0).lr(10, 1e300, {}) == 0.0  # 11**1000 overflowed
    from fractions import Fraction
    assert optim.InverseScalingLR(300.0).lr(10, 1e300, {}) == pytest.approx(
        float(Fraction(1e300) / 11 ** 300), rel=1e-12)                # 11.0**300 overflows
    assert optim.CosineAnnealingLR(7).lr(10**15, 0.1, {}) >= 0


def test_a_schedule_that_would_overflow_is_refused_before_the_first_epoch():
    X, y = data()
    m = model()
    before = m.get_params()
    with raises(ValueError, "fit: StepLR(step_size=1, gamma=10.0) gives lr inf at epoch 399 "
                            "from lr 0.1; the rate must be finite and >= 0 at every epoch of "
                            "the fit (0 to 399); no epoch was trained"):
        m.fit(X, y, epochs=400, batch_size=40, lr=0.1, lr_schedule=optim.StepLR(1, 10.0))
    assert params_equal(m.params, before) and (m.epoch_, m.step_) == (0, 0)
    # the same schedule over epochs whose rates are finite trains
    h = m.fit(X, y, epochs=3, batch_size=40, lr=0.1, lr_schedule=optim.StepLR(1, 10.0))
    np.testing.assert_allclose(h["lr"], [0.1, 1.0, 10.0], rtol=1e-15)


@pytest.mark.parametrize("bad", [NAN, -0.1, float("inf"), "0.1", True])
def test_min_delta_is_checked(bad):
    """min_delta=nan was accepted, and early stopping then never improved."""
    X, y = data()
    with raises(ValueError, f"fit: min_delta must be a finite number >= 0, got {bad!r}"):
        model().fit(X, y, epochs=2, early_stopping=True, min_delta=bad)


def test_total_epochs_is_checked():
    X, y = data()
    m = model()
    with raises(ValueError, "fit: total_epochs must be an integer >= 1 or None, got 0"):
        m.fit(X, y, epochs=2, lr_schedule="cosine", total_epochs=0)
    with raises(ValueError, "fit: total_epochs sizes the 'step' and 'cosine' schedules (their "
                            "horizon); lr_schedule='plateau' has none"):
        m.fit(X, y, epochs=2, lr_schedule="plateau", total_epochs=4)
    with raises(ValueError, "fit: total_epochs=3 is less than the model's 0 epochs so far plus "
                            "this fit's 4"):
        m.fit(X, y, epochs=4, lr_schedule="step", total_epochs=3)
    assert m.epoch_ == 0
    h = m.fit(X, y, epochs=2, lr=0.1, lr_schedule="cosine", total_epochs=4)
    np.testing.assert_allclose(h["lr"], [0.1, 0.05 * (1 + math.cos(math.pi / 4))], rtol=1e-15)
    assert m.lr_schedule_ == ("cosine", 4)


@pytest.mark.parametrize("case, msg", [
    (dict(sample_weight=np.full(40, 1e-50)),
     "fit: the sample weights sum to 0 in float32, the model's dtype (they are below its "
     "smallest positive number, 1.4e-45): scale the weights up (only their ratios matter)"),
    (dict(sample_weight=np.full(40, 1e39)),
     "fit: the weight of row 0 is 1e+39 (from sample_weight), past the range of float32, the "
     "model's dtype (its largest number is 3.4e+38): scale the weights down"),
    (dict(class_weight={1: 1e300}),
     "(from class_weight), past the range of float32"),
    ("held-out", "fit: the sample weights of the 36 training rows sum to 0: early stopping's "
                 "held-out validation rows hold all the weight (pass validation=, or weight "
                 "the training rows)"),
], ids=["underflow", "overflow", "class-weight-overflow", "held-out"])
def test_training_weights_are_checked_as_the_model_uses_them(case, msg):
    """Checked after the hold-out split and the cast to the model's dtype, before
    any epoch: these died with a bare ZeroDivisionError after an epoch had run,
    or blamed mlp_epoch for an inf the cast made."""
    X, y = data()
    m = model(dtype=np.float32)
    kw = dict(epochs=2, batch_size=8, lr=0.1)
    if case == "held-out":
        val = m._hold_out_rows(X, y, 0.1, 0)[1]
        w = np.zeros(40)
        w[val] = 1.0                                   # only the held-out rows weigh
        case = dict(sample_weight=w, early_stopping=True)
    before = m.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # no "overflow in cast" on the way
        with raises(ValueError, msg):
            m.fit(X.astype(np.float32), y, **kw, **case)
    assert params_equal(m.params, before) and (m.epoch_, m.step_) == (0, 0)
