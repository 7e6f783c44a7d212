"""python -m fastbp bench --contention: every scenario and contender is timed,
and the table's ratios are computed from them."""
import subprocess
import sys


from fastbp import bench, bench_contention
from conftest import child_env


def test_contention_times_every_scenario(monkeypatch):
    monkeypatch.setattr(bench, "SETTLE", 0.0)
    res = bench_contention.run(["digits"], rounds=1, block=0.005, with_torch=False)
    by = res["digits"]
    assert list(by) == list(bench_contention.SCENARIOS)
    for sc in by.values():
        assert set(sc) == {"fastbp", "fastbp-1t", "numpy"}
        assert all(0 < t < 0.1 for t in sc.values())
    table = bench_contention.format_table(res)
    row = next(line for line in table.splitlines() if line.startswith("digits  fastbp-1t"))
    # the one-thread step against itself is 1.00x in every scenario
    assert row.split()[6:10] == ["1.00x"] * 4


def test_contention_is_refused_with_vs_sklearn():
    r = subprocess.run([sys.executable, "-m", "fastbp", "bench", "--contention", "--vs-sklearn"],
                       capture_output=True, text=True, env=child_env(), timeout=60)
    assert r.returncode == 2
    assert "--contention: not allowed with argument --vs-sklearn" in r.stderr
