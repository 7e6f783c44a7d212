"""The data-parallel training step on P ranks, phase by phase (docs/distributed.md).

    OMP_NUM_THREADS=1 mpiexec -n P python bench/mpi_step.py [--sizes medium large wide]

Every rank trains the benchmark network of each size (fastbp.bench.SIZES: float32,
ReLU, softmax-cross-entropy, plain SGD) on its own batch of the size's N rows, so
a P-rank step trains on P x N rows (batch_size is per rank). One thread per rank.
Measured in interleaved rounds, on every rank at once:

* plain: ``model.train_step(x, y, lr)`` without a communicator (fused SGD);
* step: ``model.train_step(x, y, lr, comm=comm)``, the whole data-parallel step;
* its phases, with the engine's calls: mode BACKWARD, a barrier (so that the next
  figure is the transfer, not the wait for the slower rank), the Allreduce of the
  gradient block, mode UPDATE.

Rank 0 prints the medians (ms) in a Markdown table, and the Allreduce's algorithm
bandwidth (gradient bytes / its time). Not a pytest file: run it under mpiexec.
"""
import argparse
import json
import time

import numpy as np
from mpi4py import MPI

import fastbp
from fastbp import MLP, _core
from fastbp._atomic import write_bytes
from fastbp.bench import SIZES


def median_ms(samples):
    return 1e3 * float(np.median(samples))


def measure(size, comm, rounds, block):
    N, widths = SIZES[size]
    rng = np.random.default_rng(comm.Get_rank())
    x = rng.standard_normal((N, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], N)
    lr = 1e-3
    plain = MLP(widths, "relu", dtype=np.float32, seed=0)
    dp = MLP(widths, "relu", dtype=np.float32, seed=0)
    for _ in range(2):
        plain.train_step(x, y, lr)
        dp.train_step(x, y, lr, comm=comm)
    ws = dp._engine.workspace(N)
    opts = fastbp.distributed._SESSIONS[dp].options.opts  # the data-parallel steps' own
    times = {k: [] for k in ("plain", "step", "backward", "allreduce", "update")}

    def reps(fn):
        """Calls of fn, about `block` seconds in all (the same count on every rank)."""
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        one = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        return max(1, int(block / max(one, 1e-6)))

    k_plain = reps(lambda: plain.train_step(x, y, lr))
    k_step = reps(lambda: dp.train_step(x, y, lr, comm=comm))
    for _ in range(rounds):
        comm.Barrier()
        for _ in range(k_plain):
            t0 = time.perf_counter()
            plain.train_step(x, y, lr)
            times["plain"].append(time.perf_counter() - t0)
        comm.Barrier()
        for _ in range(k_step):
            t0 = time.perf_counter()
            dp.train_step(x, y, lr, comm=comm)
            times["step"].append(time.perf_counter() - t0)
        for _ in range(k_step):
            comm.Barrier()
            t0 = time.perf_counter()
            opts.mode, opts.norm, opts.row0 = _core.STEP_BACKWARD, float(N * comm.Get_size()), 0
            _core.mlp_step(ws, x, y, opts, check_labels=False)
            t1 = time.perf_counter()
            comm.Barrier()
            t2 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, ws.grad, op=MPI.SUM)
            t3 = time.perf_counter()
            opts.mode = _core.STEP_UPDATE
            _core.mlp_step(ws, None, None, opts)
            t4 = time.perf_counter()
            times["backward"].append(t1 - t0)
            times["allreduce"].append(t3 - t2)
            times["update"].append(t4 - t3)
    # every rank's medians; the slowest rank's is the step's
    mine = {k: median_ms(v) for k, v in times.items()}
    worst = {k: max(d[k] for d in comm.allgather(mine)) for k in mine}
    nparams = sum(i * o + o for i, o in zip(widths[:-1], widths[1:]))
    worst.update(size=size, P=comm.Get_size(), N=N, net="-".join(map(str, widths)),
                 params=nparams, grad_mb=ws.grad.nbytes / 1e6,
                 allreduce_gbs=ws.grad.nbytes / (worst["allreduce"] * 1e-3) / 1e9)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["medium", "large", "wide"],
                    choices=list(SIZES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--block", type=float, default=0.3, help="seconds per timed block")
    ap.add_argument("--json", default="", help="also write the rows to this file")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    fastbp.set_num_threads(1)
    rows = [measure(s, comm, args.rounds, args.block) for s in args.sizes]
    if comm.Get_rank() == 0:
        print(f"P = {comm.Get_size()}, one thread per rank, {MPI.Get_library_version().split()[0:3]}")
        print("| size | N per rank | params | grad MB | plain ms | step ms | backward ms "
              "| allreduce ms | update ms | allreduce GB/s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['size']} | {r['N']} | {r['params'] / 1e6:.2f} M | {r['grad_mb']:.1f} "
                  f"| {r['plain']:.3f} | {r['step']:.3f} | {r['backward']:.3f} "
                  f"| {r['allreduce']:.3f} | {r['update']:.3f} | {r['allreduce_gbs']:.2f} |")
        if args.json:
            write_bytes(args.json, json.dumps(rows, indent=1).encode())


if __name__ == "__main__":
    main()
