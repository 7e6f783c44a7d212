"""Data-parallel training of an MLP on scikit-learn's digits, over MPI.

    pip install "fastbp[mpi]" scikit-learn
    mpiexec -n 2 python examples/train_mpi.py [--epochs 30] [--batch-size 32]

Every rank loads the data set, keeps its own contiguous block of the training
rows (fastbp.distributed.shard) and of the test rows, and calls fit with
comm=: each step trains on the concatenation of every rank's batch (a global
batch of P x batch-size rows), the ranks start from rank 0's model, and the
history (losses, accuracies over every rank's rows) is the same on every rank.
abort_on_error ends the whole job if any rank fails, instead of leaving the
others waiting. See docs/distributed.md.
"""
import argparse

import numpy as np
from mpi4py import MPI
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fastbp
from fastbp import distributed as dist


def main():
    ap = argparse.ArgumentParser(description="data-parallel training on digits")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32, help="rows per rank per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    comm = MPI.COMM_WORLD
    rank, P = comm.Get_rank(), comm.Get_size()
    with dist.abort_on_error(comm):
        X, y = load_digits(return_X_y=True)
        X = (X / 16.0).astype(np.float32)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
        Xtr, ytr = dist.shard(Xtr, comm), dist.shard(ytr, comm)
        Xte, yte = dist.shard(Xte, comm), dist.shard(yte, comm)

        # The seed may differ between ranks: fit starts every rank from rank 0's model.
        model = fastbp.MLP([64, 128, 10], "relu", seed=rank, dropout=0.1)
        hist = model.fit(Xtr, ytr, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=fastbp.optim.Adam(args.lr), validation=(Xte, yte),
                         early_stopping=True, patience=5, comm=comm, verbose=rank == 0)
        synced = dist.is_synced(model, comm)
        if rank == 0:
            print(f"{P} ranks, {len(hist['loss'])} epochs, {model.step_} steps: "
                  f"loss {hist['loss'][-1]:.4f}, train accuracy {hist['accuracy'][-1]:.4f}, "
                  f"test accuracy {hist['val_accuracy'][-1]:.4f}; "
                  f"models identical on every rank: {synced}")


if __name__ == "__main__":
    main()
