"""The command line: python -m fastbp train | bench | info (also the `fastbp`
console script).

Most tests call fastbp.__main__.main in-process and catch SystemExit; a few run
a subprocess for what only a real program has: its name (sys.argv[0]), a
stderr that is no terminal, and its exit status. Training runs are tiny
(digits, one epoch, 8 hidden units); bench runs replace fastbp.bench.run and
environment with fakes, so nothing is timed.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import bench
from fastbp.__main__ import main

SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
TINY = ["train", "--epochs", "1", "--hidden", "8", "--no-progress"]
# MSE on diabetes (standardized targets) at lr 1e6: the first epoch's loss is nan
DIVERGE = ["--data", "diabetes", "--lr", "1e6"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def usage_error(capsys, argv):
    """main(argv) stops with argparse's usage error (exit 2): its stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "usage:" in err and "error:" in err, err
    return err


def run_program(args, tmp_path, stderr_to_file=False):
    """Run a program (argv list) with this checkout's fastbp; (rc, stdout, stderr),
    decoded as they are (no newline translation: a "\\r" stays one)."""
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="200")
    if stderr_to_file:
        with open(tmp_path / "stderr.log", "w+b") as log:
            p = subprocess.run(args, stdout=subprocess.PIPE, stderr=log, env=env, timeout=120)
            log.seek(0)
            err = log.read()
    else:
        p = subprocess.run(args, capture_output=True, env=env, timeout=120)
        err = p.stderr
    return p.returncode, p.stdout.decode(), err.decode()


def console_script(tmp_path):
    """A stand-in for the installed `fastbp` script (what pip writes for
    [project.scripts] fastbp = "fastbp.__main__:main")."""
    path = tmp_path / "bin" / "fastbp"
    path.parent.mkdir(exist_ok=True)
    path.write_text("import sys\nfrom fastbp.__main__ import main\n"
                    "if __name__ == '__main__':\n    sys.exit(main())\n")
    return [sys.executable, str(path)]


@pytest.fixture
def fake_bench(monkeypatch, tmp_path):
    """bench without timing anything: run() returns fixed rows (and records its
    calls), environment() is empty; the working directory is tmp_path."""
    calls = []

    def run(sizes=None, repeat=None, threads=None, with_torch=None, optimizer="sgd"):
        calls.append((sizes, repeat, threads) + ((optimizer,) if optimizer != "sgd" else ()))
        return [{"size": s, "batch": bench.SIZES[s][0], "widths": bench.SIZES[s][1],
                 "ms": {"fastbp": 2.0, "floor": 1.0, "numpy": 4.0},
                 "ratio_to_floor": {"fastbp": 2.0, "floor": 1.0, "numpy": 4.0}}
                for s in sizes or ["book", "small"]]

    monkeypatch.setattr(bench, "run", run)
    monkeypatch.setattr(bench, "environment", lambda: {})
    monkeypatch.chdir(tmp_path)
    return calls


# ---- 1. values out of range: argparse's usage error, exit 2 ------------------------------

BAD_TRAIN = [
    (["--epochs", "0"], "--epochs", "'0'"),
    (["--epochs", "-3"], "--epochs", "'-3'"),
    (["--batch-size", "0"], "--batch-size", "'0'"),
    (["--hidden", "0"], "--hidden", "'0'"),
    (["--hidden", "16", "-1"], "--hidden", "'-1'"),
    (["--threads", "0"], "--threads", "'0'"),
    (["--threads", "5000"], "--threads", "'5000'"),
    (["--lr", "0"], "--lr", "'0'"),
    (["--lr", "-0.1"], "--lr", "'-0.1'"),
    (["--lr", "nan"], "--lr", "'nan'"),
    (["--lr", "inf"], "--lr", "'inf'"),
    (["--momentum", "1"], "--momentum", "'1'"),
    (["--momentum", "-0.5"], "--momentum", "'-0.5'"),
    (["--momentum", "nan"], "--momentum", "'nan'"),
    (["--weight-decay=-1e-4"], "--weight-decay", "'-1e-4'"),
    (["--weight-decay", "-0.5"], "--weight-decay", "'-0.5'"),
    (["--weight-decay", "nan"], "--weight-decay", "'nan'"),
    (["--weight-decay", "inf"], "--weight-decay", "'inf'"),
    (["--seed", "-1"], "--seed", "'-1'"),
    (["--epochs", "two"], "--epochs", "'two'"),
]


@pytest.mark.parametrize("bad, option, given", BAD_TRAIN, ids=[" ".join(b[0]) for b in BAD_TRAIN])
def test_train_rejects_out_of_range_values(capsys, bad, option, given):
    err = usage_error(capsys, TINY + bad)
    assert f"argument {option}" in err and given in err and "expected" in err, err
    assert "Traceback" not in err


BAD_BENCH = [
    (["--repeat", "-1"], "--repeat", "'-1'"),
    (["--repeat", "0"], "--repeat", "'0'"),
    (["--threads", "0"], "--threads", "'0'"),
    (["--sizes", "small", "bogus"], "--sizes", "'bogus'"),
]


@pytest.mark.parametrize("bad, option, given", BAD_BENCH, ids=[" ".join(b[0]) for b in BAD_BENCH])
def test_bench_rejects_out_of_range_values(capsys, fake_bench, bad, option, given):
    err = usage_error(capsys, ["bench", *bad])
    assert f"argument {option}" in err and given in err and "expected" in err, err
    assert fake_bench == []  # nothing ran


def test_bench_optimizer_must_be_known(capsys, fake_bench):
    err = usage_error(capsys, ["bench", "--optimizer", "rmsprop"])
    assert "--optimizer" in err and "'rmsprop'" in err and "adam" in err, err
    assert fake_bench == []


def test_bench_sizes_message_lists_the_sizes(capsys, fake_bench):
    err = usage_error(capsys, ["bench", "--sizes", "bogus"])
    for name in bench.SIZES:
        assert name in err, err


def test_good_values_pass(capsys, fake_bench):
    assert main(["bench", "--sizes", "book", "wide", "--repeat", "3", "--threads", "1"]) == 0
    assert fake_bench == [(["book", "wide"], 3, 1)]
    assert main(["bench", "--sizes", "small", "--optimizer", "adam", "--repeat", "2"]) == 0
    assert fake_bench[-1] == (["small"], 2, None, "adam")
    assert "optimizer: Adam(lr=1e-06)" in capsys.readouterr().out
    assert main(TINY + ["--momentum", "0.9", "--weight-decay", "0", "--lr", "0.05",
                        "--threads", "1", "--hidden", "8", "4"]) == 0
    assert "64-8-4-10" in capsys.readouterr().out


# ---- 2. output paths are checked before the work starts ------------------------------------

def test_save_into_a_missing_directory(capsys, tmp_path):
    path = str(tmp_path / "nowhere" / "model.npz")
    err = usage_error(capsys, TINY + ["--save", path])
    assert "argument --save" in err and path in err and "does not exist" in err, err


def test_save_to_a_directory(capsys, tmp_path):
    err = usage_error(capsys, TINY + ["--save", str(tmp_path)])
    assert str(tmp_path) in err and "directory" in err, err
    assert not os.path.exists(str(tmp_path) + ".npz")


def test_save_under_a_file(capsys, tmp_path):
    (tmp_path / "plain").write_text("")
    path = str(tmp_path / "plain" / "model.npz")
    err = usage_error(capsys, TINY + ["--save", path])
    assert path in err, err


def test_save_into_a_read_only_directory(capsys, monkeypatch, tmp_path):
    ro = str(tmp_path / "ro")
    os.mkdir(ro)
    real_access = os.access
    # as if read-only (a real chmod means nothing to root)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        False if os.fspath(p) == ro and mode & os.W_OK else real_access(p, mode, **kw)))
    path = os.path.join(ro, "m.npz")
    err = usage_error(capsys, TINY + ["--save", path])
    assert path in err and "not writable" in err, err
    err = usage_error(capsys, ["bench", "--json", os.path.join(ro, "new", "r.json")])
    assert "not writable" in err, err


@pytest.mark.parametrize("option", ["--json", "--png"])
def test_bench_output_is_a_directory(capsys, fake_bench, tmp_path, option):
    (tmp_path / "out").mkdir()
    err = usage_error(capsys, ["bench", option, "out"])
    assert f"argument {option}" in err and "'out'" in err and "directory" in err, err
    assert fake_bench == []


@pytest.mark.parametrize("option", ["--json", "--png"])
def test_bench_output_under_a_file(capsys, fake_bench, tmp_path, option):
    (tmp_path / "plain").write_text("")
    err = usage_error(capsys, ["bench", option, "plain/x"])
    assert f"argument {option}" in err and "plain/x" in err, err
    assert fake_bench == []


def test_bench_creates_missing_directories(capsys, fake_bench, tmp_path):
    assert main(["bench", "--json", "a/b/r.json", "--png", ""]) == 0
    assert (tmp_path / "a" / "b" / "r.json").is_file()
    assert "wrote a/b/r.json" in capsys.readouterr().out


# ---- 3. the messages name the files really written ---------------------------------------

def test_save_reports_the_file_written(capsys, tmp_path):
    path = str(tmp_path / "model")
    assert main(TINY + ["--save", path]) == 0
    out = capsys.readouterr().out
    assert f"saved to {path}.npz\n" in out, out
    assert fastbp.MLP.load(path + ".npz").sizes == [64, 8, 10]


def test_png_goes_where_asked(capsys, fake_bench, tmp_path):
    pytest.importorskip("matplotlib")
    assert main(["bench", "--json", "r.json", "--png", "chart"]) == 0
    out = capsys.readouterr().out
    assert "wrote r.json\n" in out and "wrote chart\n" in out, out
    assert (tmp_path / "chart").read_bytes().startswith(PNG_MAGIC)
    assert not (tmp_path / "chart.png").exists()
    assert (tmp_path / "r.json").is_file()


# ---- 4. a diverged run fails ------------------------------------------------------------

def test_divergence_exits_1(capsys):
    assert main(TINY + DIVERGE) == 1
    err = capsys.readouterr().err
    assert "fastbp train: the loss diverged (nan) at epoch 1; lower --lr" in err, err


def test_non_finite_score_exits_1(capsys, monkeypatch):
    monkeypatch.setattr(fastbp.MLP, "score", lambda self, X, y: float("inf"))
    assert main(TINY) == 1
    err = capsys.readouterr().err
    assert "fastbp train: the loss diverged" in err and "inf" in err and "lower --lr" in err


def test_non_finite_weights_exit_1(capsys, monkeypatch):
    # losses measured before each update, an accuracy finite whatever the outputs:
    # only the weights show a last update that diverged
    fit = fastbp.MLP.fit

    def diverging_fit(self, *args, **kw):
        hist = fit(self, *args, **kw)
        next(iter(self.params.values()))[...] = np.nan
        return hist

    monkeypatch.setattr(fastbp.MLP, "fit", diverging_fit)
    assert main(TINY) == 1
    err = capsys.readouterr().err
    assert "the loss diverged (" in err and "not finite) after epoch 1; lower --lr" in err, err


def test_divergence_does_not_save(capsys, tmp_path):
    assert main(TINY + DIVERGE + ["--save", str(tmp_path / "m.npz")]) == 1
    assert not (tmp_path / "m.npz").exists()


def test_console_script_exit_status(tmp_path):
    script = console_script(tmp_path)
    rc, out, err = run_program(script + TINY + DIVERGE, tmp_path)
    assert rc == 1 and "the loss diverged (nan) at epoch 1" in err, (rc, out, err)
    rc, out, err = run_program(script + ["train", "--epochs", "0"], tmp_path)
    assert rc == 2 and "Traceback" not in err, (rc, out, err)


# ---- 5. --help: the program's name, the defaults -----------------------------------------

@pytest.mark.parametrize("argv0, prog", [
    ("/usr/lib/python3/site-packages/fastbp/__main__.py", "python -m fastbp"),
    ("/usr/local/bin/fastbp", "fastbp"),
    ("fastbp-dev", "fastbp-dev"),
])
def test_help_names_the_program(capsys, monkeypatch, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {prog} train ")


def test_help_names_the_program_when_run(tmp_path):
    rc, out, _ = run_program([sys.executable, "-m", "fastbp", "--help"], tmp_path)
    assert rc == 0 and out.startswith("usage: python -m fastbp "), out
    rc, out, _ = run_program(console_script(tmp_path) + ["bench", "--help"], tmp_path)
    assert rc == 0 and out.startswith("usage: fastbp bench "), out


def test_help_shows_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for text in ["(default: digits)", "(default: 128)", "(default: relu)", "(default: 30)",
                 "(default: 32)", "(default: 0.1; 0.01 for diabetes)", "(default: 0.0)",
                 "(default: float32)", "(default: 0)"]:
        assert text in out, (text, out)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    for text in ["(default: bench-results/step.json)", "(default: bench-results/step.png)",
                 "(default: all:"]:
        assert text in out, (text, out)


# ---- 6. the progress bar only on a terminal ----------------------------------------------

def test_no_progress_bar_into_a_log(tmp_path):
    rc, out, err = run_program([sys.executable, "-m", "fastbp", "train", "--epochs", "2",
                                "--hidden", "8"], tmp_path, stderr_to_file=True)
    assert rc == 0, err
    assert "\r" not in err, repr(err)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_on_a_terminal(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 0 cols: no bar
    env = dict(os.environ, PYTHONPATH=SRC)
    try:
        p = subprocess.Popen([sys.executable, "-m", "fastbp", "train", "--epochs", "2",
                              "--hidden", "8"], stdout=subprocess.DEVNULL, stderr=slave, env=env)
        os.close(slave)
        assert p.wait(timeout=120) == 0
        err = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
    assert b"\r" in err and b"epoch" in err, err


def test_progress_follows_stderr(capsys):
    assert main(["train", "--epochs", "2", "--hidden", "8"]) == 0
    assert "\r" not in capsys.readouterr().err  # capsys's stderr is no terminal
    assert main(["train", "--epochs", "2", "--hidden", "8", "--progress"]) == 0
    assert "\r" in capsys.readouterr().err
    err = usage_error(capsys, TINY + ["--progress"])
    assert "not allowed with" in err


# ---- 7. bench's default outputs --------------------------------------------------------

def test_bench_default_outputs(capsys, fake_bench, tmp_path):
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "bench-results" / "step.json").is_file()
    assert "wrote bench-results/step.json\n" in out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "bench-results" / "step.png").read_bytes().startswith(PNG_MAGIC)
    assert "wrote bench-results/step.png\n" in out


def test_bench_empty_path_skips_the_output(capsys, fake_bench, tmp_path):
    assert main(["bench", "--json", "", "--png", ""]) == 0
    assert "wrote" not in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


# ---- bench --vs-sklearn ---------------------------------------------------------------------

@pytest.fixture
def fake_sklearn_bench(monkeypatch, tmp_path):
    """bench --vs-sklearn without fitting anything: bench_sklearn.run returns a
    fixed row per workload (and records its calls); the working directory is
    tmp_path."""
    pytest.importorskip("sklearn")
    from fastbp import bench_sklearn

    calls = []

    def run(names=None, threads=None, repeat=None, n_samples=None, max_iter=None):
        calls.append((names, threads, repeat))
        return [{"dataset": n, "task": "classification", "rows": 10, "features": 3,
                 "hidden": [4], "dtype": "float64", "threads": threads or 2,
                 "sklearn_s": 3.0, "fastbp_s": 1.0, "speedup": 3.0, "sklearn_iter": 5,
                 "fastbp_iter": 5, "sklearn_score": 0.9, "fastbp_score": 0.9}
                for n in names or ["digits"]]

    monkeypatch.setattr(bench_sklearn, "run", run)
    monkeypatch.setattr(bench, "environment", lambda: {})
    monkeypatch.chdir(tmp_path)
    return calls


def test_bench_vs_sklearn_runs_its_workloads(capsys, fake_sklearn_bench, tmp_path):
    assert main(["bench", "--vs-sklearn", "--datasets", "wine", "diabetes", "--threads", "1",
                 "--repeat", "2"]) == 0
    assert fake_sklearn_bench == [(["wine", "diabetes"], 1, 2)]
    out = capsys.readouterr().out
    assert "wine" in out and "3.00x" in out and "wrote bench-results/sklearn.json" in out, out
    assert (tmp_path / "bench-results" / "sklearn.json").is_file()
    assert not (tmp_path / "bench-results" / "step.json").exists()
    assert main(["bench", "--vs-sklearn", "--json", ""]) == 0
    assert fake_sklearn_bench[-1] == (None, None, None)


def test_bench_datasets_are_checked(capsys, fake_sklearn_bench):
    err = usage_error(capsys, ["bench", "--vs-sklearn", "--datasets", "mnist"])
    assert "argument --datasets" in err and "'mnist'" in err and "digits" in err, err
    err = usage_error(capsys, ["bench", "--datasets", "wine"])
    assert "argument --datasets" in err and "--vs-sklearn" in err, err
    assert fake_sklearn_bench == []


# ---- Ctrl-C during train (issue 25, defect 9) ----------------------------------------

def interrupt_after_two_epochs(monkeypatch):
    """MLP.fit that trains two epochs, then raises KeyboardInterrupt in the
    third, as Ctrl-C does between two native calls."""
    real = fastbp.MLP.fit

    def fit(self, *args, **kwargs):
        def stop(model, epoch, history):
            if epoch == 1:
                raise KeyboardInterrupt
        return real(self, *args, **dict(kwargs, callbacks=[stop]))
    monkeypatch.setattr(fastbp.MLP, "fit", fit)


def test_ctrl_c_saves_what_was_trained_and_exits_130(capsys, monkeypatch, tmp_path):
    """Before: a KeyboardInterrupt traceback, and nothing saved."""
    interrupt_after_two_epochs(monkeypatch)
    path = tmp_path / "model.npz"
    assert main(["train", "--epochs", "50", "--hidden", "8", "--no-progress",
                 "--save", str(path)]) == 130
    out, err = capsys.readouterr()
    assert err == (f"fastbp train: interrupted in epoch 3 of 50 (after 86 steps); saved the "
                   f"model to {path}\n"), err
    model = fastbp.MLP.load(path)
    assert (model.epoch_, model.step_, model.sizes) == (2, 86, [64, 8, 10])


def test_ctrl_c_without_save_says_nothing_was_saved(capsys, monkeypatch, tmp_path):
    interrupt_after_two_epochs(monkeypatch)
    assert main(["train", "--epochs", "50", "--hidden", "8", "--no-progress"]) == 130
    assert capsys.readouterr().err == ("fastbp train: interrupted in epoch 3 of 50 (after 86 "
                                       "steps); nothing saved (no --save)\n")
    assert os.listdir(tmp_path) == []


def test_ctrl_c_elsewhere_exits_130_without_a_traceback(capsys, monkeypatch):
    import fastbp.__main__ as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "load_dataset", interrupted)
    assert main(TINY) == 130
    assert capsys.readouterr().err.endswith(" train: interrupted\n")


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
def test_sigint_to_the_program_saves_and_exits_130(tmp_path):
    """The real thing: SIGINT to `python -m fastbp train` once it has printed
    its first line (the fit starts right after)."""
    import signal
    import time

    path = tmp_path / "run.npz"
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "fastbp", "train", "--epochs", "1000000",
                          "--hidden", "16", "--no-progress", "--save", str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().startswith("fastbp "), p.stderr.read()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastbp train: interrupted in epoch "), err
    assert lines[0].endswith(f"; saved the model to {path}"), err
    model = fastbp.MLP.load(path)
    assert model.step_ > 0 and model.sizes == [64, 16, 10]
