"""Ctrl-C during MLP.fit: fit runs its batches in native calls of about 50 ms
(model._CHUNK_SECONDS), so SIGINT raises KeyboardInterrupt within a fraction
of a second, leaving the parameters of exactly step_ completed steps and the
history of the completed epochs."""

import signal
import sys

import pytest

from conftest import sigint_child

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not hasattr(signal, "SIGINT"),
                                reason="needs POSIX signals")

# A one-epoch fit of many seconds; after the interrupt the child replays step_
# train_steps on the same batches from the same start and compares.
CHILD = r"""
import json, sys, time
import numpy as np
from fastbp import MLP
from fastbp.model import epoch_order

rng = np.random.default_rng(0)
n = 200_000
X = rng.standard_normal((n, 100), dtype=np.float32)
y = rng.integers(0, 10, n)
model = MLP([100, 1024, 1024, 10], "relu", seed=0)
start = model.get_params()
print("ready", flush=True)
try:
    model.fit(X, y, epochs=1, batch_size=32, lr=0.01, seed=3)
    print(json.dumps({"finished": True}), flush=True)
    sys.exit(0)
except KeyboardInterrupt:
    t = time.monotonic()
steps = model.step_
out = {"t": t, "step": steps, "epoch": model.epoch_, "opt_t": model.optimizer_state["t"],
       "history": {k: len(v) for k, v in model.history_.items()}}
replay = MLP([100, 1024, 1024, 10], "relu", seed=0)
order = epoch_order(n, 3, 0)
for s in range(steps):
    idx = order[32 * s:32 * (s + 1)]
    replay.train_step(X[idx], y[idx], 0.01)
out["same"] = all(np.array_equal(replay.params[k], model.params[k]) for k in start)
out["moved"] = not np.array_equal(start["W1"], model.params["W1"])
model.fit(X[:64], y[:64], epochs=1, batch_size=32, lr=0.01)      # still trains
out["after"] = [model.step_, model.epoch_]
print(json.dumps(out), flush=True)
"""


def test_ctrl_c_stops_fit_promptly_and_consistently():
    res, sent = sigint_child(CHILD)
    assert not res.get("finished"), "the fit ended before the signal: make it longer"
    delay = res["t"] - sent
    assert 0 <= delay < 0.2, f"KeyboardInterrupt came {delay:.3f} s after SIGINT"
    assert res["step"] > 0 and res["opt_t"] == res["step"]
    assert res["epoch"] == 0
    assert res["history"] == {"loss": 0, "lr": 0, "accuracy": 0}
    assert res["moved"] and res["same"], "the parameters are not those of step_ steps"
    assert res["after"] == [res["step"] + 2, 1]


def test_epoch_loss_does_not_depend_on_the_chunks(monkeypatch):
    """fit's native calls are sized by their measured time, so where an epoch is
    split depends on the machine's load; the epoch's loss is a running sum passed
    from call to call, added in one order however the epoch is split."""
    import numpy as np
    from fastbp import MLP, model as model_module

    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((300, 7)), rng.integers(0, 4, 300)
    w = rng.random(300) + 0.5
    calls = []
    real = model_module._core.mlp_epoch

    def spy(*args):
        calls.append(args[7] - args[6])
        return real(*args)

    monkeypatch.setattr(model_module._core, "mlp_epoch", spy)
    runs = {}
    for seconds in (1e-12, 1e9):        # one batch per call; calls of 1, 4, 16, ... batches
        monkeypatch.setattr(model_module, "_CHUNK_SECONDS", seconds)
        calls.clear()
        m = MLP([7, 16, 4], "tanh", dtype=np.float64, seed=0)
        runs[seconds] = m.fit(X, y, epochs=2, batch_size=5, sample_weight=w, lr=0.1)["loss"]
        assert sum(calls) == 2 * 60
        runs[seconds, "calls"] = len(calls)
    assert runs[1e-12, "calls"] == 120 and runs[1e9, "calls"] < 20
    assert runs[1e-12] == runs[1e9]     # bitwise
