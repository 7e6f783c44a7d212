"""The README's walk-through ("Your own data, end to end") run as written, in a
temp dir: a CSV with a string label, train, predict on new raw rows, an ONNX
file checked against predict, a PNG of the curves."""
import os
import re
import shlex
import subprocess
import sys

import pytest

import fastbp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))


def walkthrough():
    """The commands of the README block after the walkthrough marker."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = re.search(r"<!-- walkthrough[^>]*-->\n```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_walkthrough_has_at_most_five_commands():
    cmds = walkthrough()
    assert 1 <= len(cmds) <= 5, cmds
    assert [c.split()[0] for c in cmds] == ["python", "fastbp", "fastbp", "fastbp"]


def test_the_readme_walkthrough_runs(tmp_path):
    for mod in ("sklearn", "pandas", "matplotlib", "onnx", "onnxruntime"):
        pytest.importorskip(mod)
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="2")
    outputs = []
    for cmd in walkthrough():
        argv = shlex.split(cmd)
        # `fastbp` is the console script pip installs; here the same program from this tree
        argv = ([sys.executable, "-m", "fastbp"] + argv[1:] if argv[0] == "fastbp"
                else [sys.executable] + argv[1:])
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        outputs.append(r.stdout + r.stderr)
    train, predict, export = outputs[1:]
    assert "target 'diagnosis': classification" in train
    acc = float(train.split("test accuracy ")[1].split()[0])
    assert acc > 0.9 and f"on raw rows its test accuracy is {acc:.4f}" in train
    lines = (tmp_path / "predictions.csv").read_text().splitlines()
    assert lines[0] == "diagnosis" and len(lines) == 21
    assert set(lines[1:]) <= {"benign", "malignant"}
    assert "labels equal predict's on 20/20" in export and "(agrees to 1e-5)" in export
    assert (tmp_path / "model.onnx").stat().st_size > 0
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
