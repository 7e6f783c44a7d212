"""The cost model of docs/distributed.md: data-parallel step time and parallel
efficiency at P ranks on a network, from our own single-rank measurements.

    OMP_NUM_THREADS=1 mpiexec -n 1 python bench/mpi_step.py --json p1.json
    python bench/mpi_projection.py p1.json

Per rank and step: compute t_c = the step's BACKWARD + UPDATE phases measured at
P = 1 (one thread, the size's N rows per rank); the gradient block of `bytes`;
a ring Allreduce t_ar = 2 (P-1)/P bytes / bandwidth + 2 (P-1) latency.
Without overlap the step takes t_c + t_ar. With the reduction overlapped with
the backward pass (PyTorch DDP's buckets, one per layer, sent as soon as the
backward pass has made it), at best only what does not fit under the backward
GEMMs shows, and the first layer's bucket, made last, is never hidden:
t_c + max(t_ar(first layer), t_ar - t_bwd), with t_bwd = 2/3 t_c (the backward
pass's share of the step's GEMM work: two of every layer's three products).
Efficiency = t_c / step time (weak scaling: every rank keeps its N rows).
"""
import json
import sys

NETWORKS = {"10 Gb/s Ethernet": (10e9 / 8, 20e-6), "100 Gb/s InfiniBand": (100e9 / 8, 2e-6)}
RANKS = (8, 64)


def ring(nbytes, P, bw, lat):
    return 2 * (P - 1) / P * nbytes / bw + 2 * (P - 1) * lat


def main(path):
    rows = json.load(open(path))
    print("| size | t_c ms | grad MB | network | P | allreduce ms | step ms | efficiency "
          "| overlapped step ms | efficiency |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        tc = (r["backward"] + r["update"]) * 1e-3
        nbytes = r["grad_mb"] * 1e6
        widths = [int(w) for w in r["net"].split("-")]
        first = (widths[0] * widths[1] + widths[1]) * nbytes / r["params"]
        for net, (bw, lat) in NETWORKS.items():
            for P in RANKS:
                ar = ring(nbytes, P, bw, lat)
                plain = tc + ar
                over = tc + max(ring(first, P, bw, lat), ar - 2 / 3 * tc)
                print(f"| {r['size']} | {tc * 1e3:.1f} | {r['grad_mb']:.1f} | {net} | {P} "
                      f"| {ar * 1e3:.2f} | {plain * 1e3:.1f} | {tc / plain:.0%} "
                      f"| {over * 1e3:.1f} | {tc / over:.0%} |")


if __name__ == "__main__":
    main(sys.argv[1])
