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
    "cosine-name": lambda: "cosine",
    "callable": lambda: (lambda epoch: 0.05 / (1 + epoch)),
    "invscaling": lambda: "invscaling",
}


@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("opt", ["adam", "sgd-momentum"])
def test_fit_resumes_bitwise(tmp_path, opt, sched):
    X, y = data(50)
    kw = dict(batch_size=8, seed=5, optimizer=OPTS[opt](), lr_schedule=SCHEDULES[sched](),
              clip_value=1.0)
    named = sched in ("step-name", "cosine-name")
    whole = MLP(SIZES, "relu", dtype=np.float64, seed=1, dropout=0.2)
    h4 = whole.fit(X, y, epochs=4, **kw)
    part = MLP(SIZES, "relu", dtype=np.float64, seed=1, dropout=0.2)
    # a named schedule's horizon is the plan's: given once, saved, continued
    h2 = part.fit(X, y, epochs=2, **kw, **({"total_epochs": 4} if named else {}))
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
    (dict(lr_schedule=np.str_("linear"), lr_schedule_epochs=np.int64(4)), ValueError,
     "'lr_schedule' must be one of ('step', 'cosine'), got 'linear'"),
    (dict(lr_schedule=np.str_("cosine")), ValueError,
     "lr_schedule and lr_schedule_epochs must both be there, or neither"),
    (dict(lr_schedule=np.str_("cosine"), lr_schedule_epochs=np.int64(0)), ValueError,
     "'lr_schedule_epochs' must be >= 1, got 0"),
    (dict(had_validation=np.ones(3, bool)), ValueError,
     "'had_validation' must be bool of shape (0,)"),
    (dict(es_best=np.float64(0.5), es_wait=np.int64(1), es_best_epoch=np.int64(-1)), ValueError,
     "'es_wait' is 1, more than the model's 0 epochs"),
    (dict(es_best=np.float64(0.5), es_wait=np.int64(0)), ValueError,
     "an early-stopping state needs es_best, es_wait, es_best_epoch, got ['es_best', 'es_wait']"),
    (dict(es_best=np.float64(np.nan), es_wait=np.int64(0), es_best_epoch=np.int64(-1)),
     ValueError, "'es_best' must be a loss (a number, or inf before any), got nan"),
], ids=["shape", "dtype", "partial", "half-adam", "unknown-name", "no-name", "sgd-with-s",
        "negative-t", "float-t", "step-shape", "dropout-shape", "schedule-name",
        "schedule-half", "schedule-zero", "flags-shape", "es-wait", "es-partial", "es-nan"])
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


# ---- damaged archives: every one a ValueError naming the file and the member ----------

def zip_records(raw, name):
    """The offsets of member name's local header and central directory entry."""
    import struct
    import zipfile

    with zipfile.ZipFile(__import__("io").BytesIO(bytes(raw))) as z:
        local, start = z.getinfo(name).header_offset, z.start_dir
    pos = start
    while raw[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", raw[pos + 28:pos + 34])
        if raw[pos + 46:pos + 46 + n].decode() == name:
            return local, pos
        pos += 46 + n + m + k
    raise AssertionError(f"no central directory entry for {name}")


def patch_member(path, name, flags=None, method=None):
    """Set member name's general-purpose flags or compression method, in both its
    local header and its central directory entry."""
    import struct

    raw = bytearray(open(path, "rb").read())
    local, central = zip_records(raw, name)
    for off, (flag_at, method_at) in ((local, (6, 8)), (central, (8, 10))):
        if flags is not None:
            old = struct.unpack("<H", raw[off + flag_at:off + flag_at + 2])[0]
            raw[off + flag_at:off + flag_at + 2] = struct.pack("<H", old | flags)
        if method is not None:
            raw[off + method_at:off + method_at + 2] = struct.pack("<H", method)
    open(path, "wb").write(bytes(raw))
    return path


def compressed_file(tmp_path):
    """A valid model file whose members are deflated (np.savez_compressed)."""
    model = MLP([20, 30, 3], seed=1)
    path = tmp_path / "c.npz"
    with np.load(model.save(tmp_path / "plain.npz")) as f:
        np.savez_compressed(path, **{k: f[k] for k in f.files})
    assert MLP.load(path).sizes == [20, 30, 3]
    return path


def corrupt_deflate(path):
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = z.getinfo("W1.npy")
    raw = bytearray(open(path, "rb").read())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 20, start + info.compress_size - 4, 7):
        raw[i] ^= 0x5A
    open(path, "wb").write(bytes(raw))
    return path


@pytest.mark.parametrize("damage, cause", [
    (corrupt_deflate, ("error", "BadZipFile")),            # zlib.error, or the CRC check
    (lambda p: patch_member(p, "W1.npy", flags=0x1), ("RuntimeError",)),       # encrypted
    (lambda p: patch_member(p, "W1.npy", method=99), ("NotImplementedError",)),  # AES
    (lambda p: patch_member(p, "W1.npy", method=12), ("OSError", "not a valid .npy")),  # bzip2
], ids=["bad-deflate", "encrypted", "aes", "not-bzip2"])
def test_a_damaged_member_is_a_value_error_naming_file_and_member(tmp_path, damage, cause):
    path = damage(compressed_file(tmp_path))
    with pytest.raises(ValueError) as e:
        MLP.load(path)
    msg = str(e.value)
    assert str(path) in msg and "'W1'" in msg and "damaged" in msg, msg
    assert any(c in msg for c in cause), msg


def test_missing_and_mistyped_members_are_value_errors_too(tmp_path, adam_file):
    """Still KeyError and TypeError as before, and now ValueError as well."""
    import shutil

    other = shutil.copy(adam_file, tmp_path / "other.npz")
    path = rewrite(adam_file, ("state_sW3",))
    with pytest.raises(ValueError) as e:
        MLP.load(path)
    assert isinstance(e.value, KeyError)
    assert str(e.value) == f"MLP.load: {path}: has no 'state_sW3' (a partial optimizer state)"
    path = rewrite(other, (), state_sb2=np.zeros(9, np.float32))
    with pytest.raises(ValueError) as e:
        MLP.load(path)
    assert isinstance(e.value, TypeError) and "'state_sb2' has dtype float32" in str(e.value)


def test_a_truncated_archive_is_a_value_error(tmp_path, adam_file):
    raw = open(adam_file, "rb").read()
    for cut in (len(raw) - 10, len(raw) // 2, 100, 3):
        p = tmp_path / f"cut{cut}.npz"
        p.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=str(p).replace("\\", "\\\\")):
            MLP.load(p)


# ---- counters bounded at load; NaN or inf parameters warned about --------------------

@pytest.mark.parametrize("member", ["step", "optimizer_t", "epoch"])
def test_counters_are_bounded_at_load_and_in_training(adam_file, member):
    """A file with 2**63 - 1 loaded before, and then wrapped negative (step: the
    file save wrote next was refused) or overflowed in fit (optimizer_t). Now
    every counter stays <= 2**53: load refuses more, and a model at the bound
    refuses to train on (unchanged), so whatever save writes loads again."""
    X, y = data()
    curves = ("loss_curve", "val_loss_curve", "had_validation")
    path = rewrite(adam_file, curves, **{member: np.int64(2**63 - 1)})
    with raises(ValueError, f"'{member}' must be at most 9007199254740992 (2**53), got "
                            f"{2**63 - 1}"):
        MLP.load(path)
    path = rewrite(adam_file, curves, **{member: np.int64(2**53)})
    model = MLP.load(path)
    before = model.get_params()
    counter = {"step": "step_", "optimizer_t": "optimizer step count", "epoch": "epoch_"}[member]
    if member != "epoch":
        with raises(ValueError, f"train_step: the model's {counter} is {2**53}; 1 more would "
                                "pass 2**53"):
            model.train_step(X[:8], y[:8], optimizer=optim.Adam(0.01))
    with raises(ValueError, f"fit: the model's {counter} is {2**53}; "):
        model.fit(X, y, epochs=1, optimizer=optim.Adam(0.01))
    assert all(np.array_equal(v, model.params[k]) for k, v in before.items())
    path = rewrite(adam_file, curves, **{member: np.int64(2**53 - 1)})
    model = MLP.load(path)
    if member == "epoch":
        model.fit(X, y, epochs=1, batch_size=40, optimizer=optim.Adam(0.01))
        assert MLP.load(model.save(path)).epoch_ == 2**53
    else:
        model.train_step(X[:8], y[:8], optimizer=optim.Adam(0.01))
        again = MLP.load(model.save(path))
        assert (again.step_ if member == "step" else again.optimizer_state["t"]) == 2**53


def test_nan_parameters_warn_at_load_and_fit_refuses_them(tmp_path, adam_file):
    import shutil
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MLP.load(adam_file)                       # a finite model loads without a word
    with np.load(adam_file) as f:
        W2 = f["W2"].copy()
    W2[1, 2], W2[0, 0] = np.nan, np.inf
    path = rewrite(shutil.copy(adam_file, tmp_path / "nan.npz"), (), W2=W2)
    with pytest.warns(RuntimeWarning, match=r"NaN or inf in 'W2' \(2 of 108\)") as rec:
        model = MLP.load(path)
    assert str(path) in str(rec[0].message) and rec[0].filename == __file__
    assert np.isnan(model.params["W2"][1, 2])
    X, y = data()
    before = model.get_params()
    with raises(ValueError, "fit: the model's parameter 'W2' holds NaN or inf (2 of 108 values)"):
        model.fit(X, y, epochs=1, optimizer=optim.Adam(0.01))
    assert model.step_ == 1 and np.array_equal(model.params["W1"], before["W1"])
    W2[...] = 0.0
    model.set_params({"W2": W2})                  # replaced: it trains again
    model.fit(X, y, epochs=1, optimizer=optim.Adam(0.01))


# ---- resuming a named schedule's plan, and an early-stopping run ----------------------

def test_a_named_schedule_resumes_its_plan(tmp_path):
    """The issue's case: a 4-epoch cosine plan run as fit(epochs=2) twice got
    [1e-3, 5e-4 | 5e-4, 1.46e-4] (T_max sized from each call). The plan's
    horizon is total_epochs, saved with the model and continued."""
    X, y = data(50)
    kw = dict(batch_size=8, seed=5, optimizer=optim.Adam(1e-3), lr_schedule="cosine")
    whole = MLP(SIZES, "relu", dtype=np.float64, seed=1)
    h4 = whole.fit(X, y, epochs=4, **kw)
    np.testing.assert_allclose(h4["lr"], [1e-3, 8.535533905932737e-4, 5e-4, 1.464466094067262e-4],
                               rtol=1e-15)
    part = MLP(SIZES, "relu", dtype=np.float64, seed=1)
    h2 = part.fit(X, y, epochs=2, total_epochs=4, **kw)
    back = MLP.load(part.save(tmp_path / "c"))
    assert back.lr_schedule_ == ("cosine", 4)
    h2b = back.fit(X, y, epochs=2, **kw)
    assert h2["lr"] + h2b["lr"] == h4["lr"]
    assert_same_model(back, whole)


def test_an_ambiguous_resume_is_refused_and_changes_nothing(tmp_path):
    X, y = data(50)
    m = MLP(SIZES, "relu", dtype=np.float64, seed=1)
    m.fit(X, y, epochs=2, lr=0.1, lr_schedule="cosine")             # a plan of 2 epochs
    m = MLP.load(m.save(tmp_path / "m"))
    before = m.get_params()
    with raises(ValueError, "fit: lr_schedule='cosine' needs its horizon: the model has trained "
                            "2 epochs and its 'cosine' plan ends at epoch 2, so this fit's 2 "
                            "epochs could be the whole schedule or its end. Give total_epochs=, "
                            "the epochs of the whole plan from the model's first (e.g. 4 to end "
                            "it with this fit)"):
        m.fit(X, y, epochs=2, lr=0.1, lr_schedule="cosine")
    assert m.epoch_ == 2 and all(np.array_equal(v, m.params[k]) for k, v in before.items())
    m.fit(X, y, epochs=1, lr=0.1)                                    # constant: no plan
    assert m.lr_schedule_ is None
    with raises(ValueError, "and it trained without one"):
        m.fit(X, y, epochs=2, lr=0.1, lr_schedule="step")
    h = m.fit(X, y, epochs=2, lr=0.1, lr_schedule="step", total_epochs=6)   # explicit: fine
    assert m.lr_schedule_ == ("step", 6) and h["lr"] == [0.1 * 0.1, 0.1 * 0.1 ** 2]
    h = m.fit(X, y, epochs=1, lr=0.1, lr_schedule="step")            # inside the plan: goes on
    assert h["lr"] == [pytest.approx(0.1 * 0.1 ** 2, rel=1e-15)]


def es_data():
    """Noisy labels: the validation loss falls, then rises after epoch 8."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    flip = rng.random(80) < 0.3
    y[flip] = rng.integers(0, 3, flip.sum())
    return X, y


ES = dict(batch_size=8, seed=2, early_stopping=True, validation_fraction=0.25, patience=3)


def es_model():
    return MLP([5, 64, 3], "relu", dtype=np.float64, seed=1)


def test_early_stopping_resumed_from_a_checkpoint_is_bitwise_the_uninterrupted_run(tmp_path):
    """A checkpoint written by a callback at epoch 10 of a run that stops at
    epoch 12 with its best at epoch 8; resumed, the run stops at the same
    epoch and puts back the same parameters. Before, the resumed fit started
    a new early-stopping run (best = inf) and stopped elsewhere."""
    X, y = es_data()
    whole = es_model()
    hw = whole.fit(X, y, epochs=60, optimizer=optim.Adam(0.01), **ES)
    assert len(hw["loss"]) == 12 and int(np.argmin(hw["val_loss"])) == 8
    assert whole.early_stopping_state is None                  # stopped early: run over

    def checkpoint(model, epoch, history):
        if epoch == 9:
            model.save(tmp_path / "ckpt")
            return True                                        # "killed" right after
    part = es_model()
    hp = part.fit(X, y, epochs=60, optimizer=optim.Adam(0.01), callbacks=[checkpoint],
                  restore_best=False, **ES)
    st = MLP.load(tmp_path / "ckpt.npz").early_stopping_state
    assert (st["best"], st["wait"], st["best_epoch"]) == (hw["val_loss"][8], 1, 8)
    resumed = MLP.load(tmp_path / "ckpt.npz")
    hr = resumed.fit(X, y, epochs=60 - 10, optimizer=optim.Adam(0.01), **ES)
    assert hp["val_loss"] + hr["val_loss"] == hw["val_loss"]
    assert_same_model(resumed, whole)


def test_early_stopping_split_over_two_fits_is_the_uninterrupted_run():
    """fit(10, restore_best=False) then fit(rest): the second continues the run
    (the model keeps it); restoring the best parameters at the end of the
    first would end it, since training would then not go on from epoch 10."""
    X, y = es_data()
    whole = es_model()
    hw = whole.fit(X, y, epochs=60, optimizer=optim.Adam(0.01), **ES)
    part = es_model()
    h1 = part.fit(X, y, epochs=10, optimizer=optim.Adam(0.01), **dict(ES, restore_best=False))
    assert part.early_stopping_state["wait"] == 1
    h2 = part.fit(X, y, epochs=50, optimizer=optim.Adam(0.01), **ES)
    assert h1["val_loss"] + h2["val_loss"] == hw["val_loss"]
    assert_same_model(part, whole)
    # a first fit that restores its best parameters over later ones ends the run
    other = es_model()
    other.fit(X, y, epochs=10, optimizer=optim.Adam(0.01), **ES)
    assert other.early_stopping_state is None
    # and a fit without early stopping ends it too
    other = es_model()
    other.fit(X, y, epochs=9, optimizer=optim.Adam(0.01), **dict(ES, restore_best=False))
    other.fit(X, y, epochs=1, optimizer=optim.Adam(0.01), batch_size=8)
    assert other.early_stopping_state is None
