"""Checkpoints (MLP.save / MLP.load, src/fastbp/_checkpoint.py): a saved model
resumes training bitwise where it stopped (optimizer state, step and epoch
counters, dropout seed); files written before the optimizer state existed still
load; a file whose optimizer members are corrupt is refused before any model
is built."""

import numpy as np
import pytest

from fastbp import MLP, optim

from conftest import raises

SIZES = [5, 12, 9, 3]


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, SIZES[0])), rng.integers(0, SIZES[-1], n)


def assert_same_model(a, b):
    assert list(a.params) == list(b.params)
    for k in a.params:
        assert np.array_equal(a.params[k], b.params[k]), k
    assert (a.step_, a.epoch_) == (b.step_, b.epoch_)
    sa, sb = a.optimizer_state, b.optimizer_state
    assert sorted(sa) == sorted(sb)
    assert (sa["optimizer"], sa["t"]) == (sb["optimizer"], sb["t"])
    for k in sa:
        if k not in ("optimizer", "t"):
            for x, y in zip(sa[k], sb[k]):
                assert np.array_equal(x, y), k


OPTS = {
    "adam": lambda: optim.Adam(0.01, weight_decay=0.01),
    "adamw": lambda: optim.AdamW(0.02, betas=(0.8, 0.9)),
    "sgd-momentum": lambda: optim.SGD(0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd-nesterov": lambda: optim.SGD(0.1, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("dropout", [0.0, [0.3, 0.1]], ids=["nodrop", "dropout"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opt", list(OPTS))
def test_steps_resume_bitwise(tmp_path, opt, dtype, dropout):
    X, y = data(48)
    X = X.astype(dtype)
    batches = [(X[i:i + 8], y[i:i + 8]) for i in range(0, 48, 8)]
    whole = MLP(SIZES, "tanh", dtype=dtype, seed=3, dropout=dropout)
    part = MLP(SIZES, "tanh", dtype=dtype, seed=3, dropout=dropout)
    for x, t in batches:
        whole.train_step(x, t, optimizer=OPTS[opt](), clip_norm=0.5)
    for x, t in batches[:3]:
        part.train_step(x, t, optimizer=OPTS[opt](), clip_norm=0.5)
    path = part.save(tmp_path / "m")
    assert path == str(tmp_path / "m.npz")
    part = MLP.load(path)
    assert part.step_ == 3 and part.optimizer_state["t"] == 3
    assert part._dropout == whole._dropout and part.seed == 3 and part.dtype == dtype
    for x, t in batches[3:]:
        part.train_step(x, t, optimizer=OPTS[opt](), clip_norm=0.5)
    assert_same_model(part, whole)


def test_resume_without_the_state_would_differ(tmp_path):
    """What the test above checks is not trivially true: dropping the optimizer
    state (a new optimizer kind resets it) changes the result."""
    X, y = data()
    a = MLP(SIZES, "tanh", dtype=np.float64, seed=3)
    for i in range(3):
        a.train_step(X[8 * i:8 * i + 8], y[8 * i:8 * i + 8], optimizer=optim.Adam(0.01))
    b = MLP.load(a.save(tmp_path / "m"))
    b.train_step(X[:8], y[:8], optimizer=optim.AdamW(0.01, weight_decay=0.0))   # fresh state
    a.train_step(X[:8], y[:8], optimizer=optim.Adam(0.01))
    assert not np.array_equal(a.params["W1"], b.params["W1"])


SCHEDULES = {
    "constant": lambda: None,
    "cosine": lambda: optim.CosineAnnealingLR(T_max=4, eta_min=0.001),
    "step-name": lambda: "step",
    "callable": lambda: (lambda epoch: 0.05 / (1 + epoch)),
    "invscaling": lambda: "invscaling",
}


@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("opt", ["adam", "sgd-momentum"])
def test_fit_resumes_bitwise(tmp_path, opt, sched):
    X, y = data(50)
    kw = dict(batch_size=8, seed=5, optimizer=OPTS[opt](), lr_schedule=SCHEDULES[sched](),
              clip_value=1.0)
    whole = MLP(SIZES, "relu", dtype=np.float64, seed=1, dropout=0.2)
    h4 = whole.fit(X, y, epochs=4, **kw)
    part = MLP(SIZES, "relu", dtype=np.float64, seed=1, dropout=0.2)
    h2 = part.fit(X, y, epochs=2, **kw)
    part = MLP.load(part.save(tmp_path / "f.npz"))
    assert part.epoch_ == 2 and part.step_ == 14
    h2b = part.fit(X, y, epochs=2, **kw)
    assert_same_model(part, whole)
    assert h2["lr"] + h2b["lr"] == h4["lr"]
    assert h2["loss"] + h2b["loss"] == h4["loss"]
    if sched != "constant":
        assert len(set(h4["lr"])) == 4            # the schedule did change the rate


def test_fit_resumes_a_plateau_schedule(tmp_path):
    """ReduceLROnPlateau replays the model's loss curve, which a checkpoint keeps."""
    X, y = data(50)
    sched = optim.ReduceLROnPlateau(factor=0.5, patience=0, threshold=0.9)
    whole = MLP(SIZES, "relu", dtype=np.float64, seed=1)
    h4 = whole.fit(X, y, epochs=4, batch_size=8, lr=0.1, lr_schedule=sched)
    part = MLP(SIZES, "relu", dtype=np.float64, seed=1)
    h2 = part.fit(X, y, epochs=2, batch_size=8, lr=0.1, lr_schedule=sched)
    part = MLP.load(part.save(tmp_path / "f"))
    h2b = part.fit(X, y, epochs=2, batch_size=8, lr=0.1, lr_schedule=sched)
    assert h2["lr"] + h2b["lr"] == h4["lr"]
    assert len(set(h4["lr"])) > 1                 # the plateau rule did cut the rate
    assert part.loss_curve_ == whole.loss_curve_


def old_style_file(tmp_path, model):
    """A model file as MLP.save wrote it before checkpoints kept training state."""
    path = tmp_path / "old.npz"
    np.savez(path, sizes=np.asarray(model.sizes), activation=np.str_(model.activation),
             loss=np.str_(model.loss_name), dtype=np.str_(model.dtype.name),
             **model.get_params())
    return path


def test_a_file_without_training_state_loads(tmp_path):
    X, y = data()
    model = MLP(SIZES, "sigmoid", dtype=np.float32, seed=4)
    model.train_step(X[:8].astype(np.float32), y[:8], 0.1)
    old = MLP.load(old_style_file(tmp_path, model))
    assert old.sizes == SIZES and old.activation == "sigmoid" and old.dtype == np.float32
    for k in model.params:
        assert np.array_equal(old.params[k], model.params[k])
    assert (old.step_, old.epoch_, old.seed, old.dropout) == (0, 0, 0, 0.0)
    assert old.optimizer_state == {"optimizer": None, "t": 0}
    old.train_step(X[:8].astype(np.float32), y[:8], optimizer=optim.Adam(0.01))
    assert old.optimizer_state["t"] == 1


def rewrite(path, drop=(), **members):
    """The archive at path with members removed (drop) or replaced."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k not in drop}
    arrays.update(members)
    np.savez(path, **arrays)
    return path


class Spy(MLP):
    """Counts the models built: a refused file must build none."""
    built = 0

    def __init__(self, *args, **kwargs):
        type(self).built += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def adam_file(tmp_path):
    X, y = data()
    model = MLP(SIZES, "relu", dtype=np.float64, seed=2)
    model.train_step(X[:8], y[:8], optimizer=optim.Adam(0.01))
    return model.save(tmp_path / "adam")


@pytest.mark.parametrize("change,exc,msg", [
    (dict(state_vW1=np.zeros((5, 11))), ValueError,
     "'state_vW1' has shape (5, 11), expected (5, 12) from sizes"),
    (dict(state_sb2=np.zeros(9, np.float32)), TypeError,
     "'state_sb2' has dtype float32, expected float64"),
    (dict(drop=("state_sW3",)), KeyError, "has no 'state_sW3' (a partial optimizer state)"),
    (dict(drop=("state_sW1", "state_sW2", "state_sW3", "state_sb1", "state_sb2", "state_sb3")),
     ValueError, "an Adam state holds vW, vb, sW, sb; got ['vW', 'vb']"),
    (dict(optimizer=np.str_("Lion")), ValueError,
     "optimizer must be one of 'SGD', 'Adam', 'AdamW', 'RMSprop' or '', got 'Lion'"),
    (dict(optimizer=np.str_("")), ValueError, "optimizer state without an optimizer name"),
    (dict(optimizer=np.str_("SGD")), ValueError, "an SGD state holds vW, vb; got ['vW', 'vb', 'sW', 'sb']"),
    (dict(optimizer_t=np.int64(-1)), ValueError, "'optimizer_t' must be >= 0, got -1"),
    (dict(optimizer_t=np.float64(1.0)), ValueError, "'optimizer_t' has dtype float64"),
    (dict(step=np.array([1, 2])), ValueError, "'step' has shape (2,), expected ()"),
    (dict(dropout=np.zeros(3)), ValueError, "'dropout' has shape (3,), expected (2,)"),
], ids=["shape", "dtype", "partial", "half-adam", "unknown-name", "no-name", "sgd-with-s",
        "negative-t", "float-t", "step-shape", "dropout-shape"])
def test_corrupt_training_state_is_refused_before_building(adam_file, change, exc, msg):
    drop = change.pop("drop", ())
    path = rewrite(adam_file, drop, **change)
    Spy.built = 0
    with raises(exc, msg):
        Spy.load(path)
    assert Spy.built == 0


def test_a_valid_file_builds_one_model(adam_file):
    """The spy above would see a model built (so its zero count means something)."""
    Spy.built = 0
    model = Spy.load(adam_file)
    assert Spy.built == 1 and isinstance(model, Spy)
    assert model.optimizer_state["optimizer"] == "Adam" and model.optimizer_state["t"] == 1
