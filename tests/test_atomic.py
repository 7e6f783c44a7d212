"""Files fastbp writes (MLP.save, fastbp.onnx.export, the benchmarks' JSON and
PNG, the CLI's --save) go through fastbp._atomic: a temporary file beside the
target, fsync'ed and renamed over it, so a crash, a kill or a full disk leaves
the old file or the new one, never a torn one.

The crash-consistency test kills a process that is saving (SIGKILL at random
moments, many times) and each time loads what is on disk. Run it at length:

    PYTHONPATH=src python tests/test_atomic.py --kills 1000
"""
import errno
import os
import signal
import stat
import sys
import time

import numpy as np
import pytest

import fastbp
from fastbp import MLP
from fastbp._atomic import atomic_write, write_bytes

SIZES = [64, 256, 256, 10]


def models():
    """Three models with different parameters: the file's first content and the
    two a saving child alternates between."""
    return [MLP(SIZES, seed=s) for s in (1, 2, 3)]


def which(path, candidates):
    """The index of the candidate whose parameters the file at path holds (it
    loads), or None if it holds none of them or does not load."""
    try:
        got = MLP.load(path)
    except Exception:  # a torn file: what the tests below must never find
        return None
    for i, m in enumerate(candidates):
        if all(np.array_equal(got.params[k], m.params[k]) for k in m.params):
            return i
    return None


def leftovers(directory, name):
    return [f for f in os.listdir(directory) if f.startswith(f".{name}.") and f.endswith(".tmp")]


# ---- a failure mid-write leaves the old file ---------------------------------------------

def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device (simulated)")


def write_model(path):
    return MLP([3, 4, 2], seed=7).save(path)


def write_onnx(path):
    pytest.importorskip("onnx")
    import fastbp.onnx

    return fastbp.onnx.export(MLP([3, 4, 2], seed=7), path)


def write_bench_json(path):
    from fastbp import bench

    bench.environment = lambda: {}  # (restored by the test's monkeypatch) it takes seconds
    bench.write_json(str(path), [{"size": "tiny", "ratio_to_floor": {"fastbp": 1.0}}])
    return path


def write_cli_save(path):
    from fastbp.__main__ import main

    main(["train", "--epochs", "1", "--hidden", "4", "--no-progress", "--save", str(path)])
    return path


WRITERS = {"MLP.save": write_model, "onnx.export": write_onnx,
           "bench.write_json": write_bench_json, "cli --save": write_cli_save}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_leaves_the_old_file(tmp_path, monkeypatch, capsys, writer):
    """The write fails at its end (fsync: where a full disk or a lost device is
    reported at the latest): the target holds its old bytes, and no temporary
    file is left beside it."""
    if writer == "cli --save":
        pytest.importorskip("sklearn")
    path = tmp_path / ("out.npz" if writer in ("MLP.save", "cli --save") else "out.bin")
    path.write_bytes(b"the previous checkpoint")
    from fastbp import bench

    monkeypatch.setattr(bench, "environment", bench.environment)
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(OSError, match="No space left"):
        WRITERS[writer](path)
    assert path.read_bytes() == b"the previous checkpoint"
    assert os.listdir(tmp_path) == [path.name]


def test_an_error_mid_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """An error between two members of the archive (the third array fails to
    write): the previous checkpoint still loads, unchanged."""
    old, new, _ = models()
    path = old.save(tmp_path / "ckpt.npz")
    real, calls = np.lib.format.write_array, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="No space left"):
        new.save(path)
    monkeypatch.undo()
    assert which(path, [old, new]) == 0
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_the_new_file_has_the_permissions_open_would_give(tmp_path):
    if not hasattr(os, "fchmod"):
        pytest.skip("no POSIX permissions")
    umask = os.umask(0o027)
    try:
        fresh = tmp_path / "fresh.bin"
        write_bytes(fresh, b"x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o640          # 0o666 less the umask
        kept = tmp_path / "kept.bin"
        kept.write_bytes(b"old")
        kept.chmod(0o600)
        write_bytes(kept, b"new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.read_bytes() == b"new"
    finally:
        os.umask(umask)


def test_a_symbolic_link_is_written_through(tmp_path):
    if not hasattr(os, "symlink"):
        pytest.skip("no symbolic links")
    target = tmp_path / "run-5.npz"
    link = tmp_path / "latest.npz"
    a, b, _ = models()
    a.save(target)
    link.symlink_to(target.name)
    b.save(link)
    assert link.is_symlink() and os.readlink(link) == target.name
    assert which(target, [a, b]) == 1


def test_an_exception_in_the_block_writes_nothing(tmp_path):
    path = tmp_path / "f.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


# ---- crash consistency: SIGKILL at random moments of a save -----------------------------

def kill_during_saves(directory, kills, seed=0, window=0.03):
    """Fork a child that saves two models in turn to one path, forever; SIGKILL
    it after a random delay in [0, window) s; load what is on disk. kills times.
    Returns {"kills", "good" (files that loaded as one of the three models),
    "mid_save" (kills that left a temporary file: the kill landed inside a
    save), "new" (the file had changed since the round before)}."""
    first, *alternates = candidates = models()
    path = first.save(os.path.join(directory, "ckpt.npz"))
    rng = np.random.default_rng(seed)
    counts = {"kills": 0, "good": 0, "mid_save": 0, "new": 0}
    last = 0
    for k in range(kills):
        pid = os.fork()
        if pid == 0:  # the child: save, save, save... until killed
            try:
                i = 0
                while True:
                    alternates[i % 2].save(path)
                    i += 1
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0, window))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        counts["kills"] += 1
        found = which(path, candidates)
        if found is not None:
            counts["good"] += 1
            counts["new"] += found != last
            last = found
        tmp = leftovers(directory, "ckpt.npz")
        counts["mid_save"] += bool(tmp)
        for name in tmp:
            os.remove(os.path.join(directory, name))
    return counts


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32",
                    reason="needs fork and SIGKILL")
def test_a_killed_save_leaves_the_old_or_the_new_checkpoint(tmp_path):
    import warnings

    with warnings.catch_warnings():  # Python 3.12+ warns about fork in threaded processes
        warnings.simplefilter("ignore", DeprecationWarning)
        counts = kill_during_saves(str(tmp_path), kills=60)
    assert counts["good"] == counts["kills"] == 60, counts
    # the test means something only if the kills land inside saves, and some
    # after one completed
    assert counts["mid_save"] >= 10 and counts["new"] >= 5, counts


if __name__ == "__main__":
    import argparse
    import tempfile

    p = argparse.ArgumentParser(description="SIGKILL a saving process many times")
    p.add_argument("--kills", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    fastbp.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        c = kill_during_saves(d, a.kills, a.seed)
    print(f"{c['kills']} kills, {c['good']} files loaded good (the old or the new model), "
          f"{c['mid_save']} kills landed inside a save, {c['new']} found a newer file "
          f"({time.perf_counter() - t0:.1f} s)")
