"""``bnviz train --devices K --bn-sync {device,global}``: the lanes trained data-parallel on K processes.

    python -m bnviz train --norm scratch --devices 2 --bn-sync global --epochs 1 --out runs/dp
    torchrun --nproc-per-node 2 -m bnviz train --norm scratch --bn-sync global --epochs 1 --out runs/dp

Without torchrun, this process starts a local gloo group of K ranks (``process_group.run_local_group``: a port
the system picks, every rank watched and always ended). Under torchrun (RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set), this process is one rank of torchrun's group. Each lane (``--norm a,b``) is one run of
``data_parallel.train``, one after the other, in the same group.

Rank 0 writes, into ``--out``: history.csv (lane, step, the whole minibatch's loss and accuracy),
summary.json (settings, per lane: the final test loss and accuracy in eval mode, images per second, and how far
the devices' bn1 statistics strayed from the whole minibatch's at the recorded steps), and bn1_statistics.npz
(each device's per-channel bn1 mean and variance at those steps), and experiment.npz, the same experiment file
as a one-process run's, for replay in the dashboard: every step's loss and accuracy and the final test
evaluation of each lane (no probes: the engine's probes run in one process, and are not spread across ranks).
"""

import csv
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from bnviz.data.fashion_mnist import load_fashion_mnist, num_batches
from bnviz.devices.data_parallel import ParallelSettings, train, train_rank
from bnviz.devices.process_group import init_from_torchrun, launched_by_torchrun, run_local_group
from bnviz.devices.torchrun_watch import PeerWatch
from bnviz.live import run_folder
from bnviz.live.experiment_file import save_experiment
from bnviz.live.processes import warm_up
from bnviz.live.run_folder import discard_created, prepare_out
from bnviz.live.snapshot import Settings
from bnviz.machine.capacity import rank_capacity


def settings_for(args, norm):
    return ParallelSettings(
        norm=norm,
        activation=args.activation,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps=getattr(args, "steps", None),
        seed=args.seed,
        train_size=args.train_size,
        bn_sync=args.bn_sync,
    )


def run(args):
    """Train every lane on args.devices ranks (or torchrun's); rank 0 writes --out. Returns the records."""
    torchrun = launched_by_torchrun()
    if args.classes_per_batch != 10:
        raise ValueError("--devices trains on i.i.d. batches: --classes-per-batch is not supported with it")
    settings = [settings_for(args, norm) for norm in args.norm]  # a bad combination fails here, before any start
    watch = None
    if torchrun:
        watch = PeerWatch(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))  # torchrun's store: before the group
        rank, world_size = init_from_torchrun()
        if args.devices and args.devices != world_size:
            raise ValueError(f"--devices {args.devices} but torchrun started {world_size} processes")
    else:
        refusal = rank_capacity().refuse(args.devices)  # before any process starts: no forkserver, no rank
        if refusal:
            raise ValueError(refusal)
        rank, world_size = 0, args.devices
    out = Path(args.out) if args.out and rank == 0 else None
    created = prepare_out(out) if out else []
    try:
        data = load_fashion_mnist()
        if rank == 0:
            how = "torchrun's group" if torchrun else "a local gloo group"
            print(
                f"bnviz: training {', '.join(args.norm)} on {world_size} device(s) ({how}, BN {args.bn_sync}), "
                f"global batch {args.batch_size} = {world_size} slices, lr {args.lr}, {args.epochs} epoch(s)",
                file=sys.stderr,
            )
        records = {}
        for s in settings:
            t0 = time.perf_counter()
            if torchrun:
                try:
                    record = train(data, s, rank=rank, world_size=world_size, report=_printer(0, rank))
                    dist.barrier()
                except RuntimeError as e:  # a collective a fault interrupted (gloo, DistBackendError): name it
                    watch.fail_from(e)
            else:
                warm_up(tied=True)  # the ranks' forkserver dies with this command, even by kill -9
                record = run_local_group(
                    train_rank, world_size, data, s, progress=_printer(0), timeout_s=24 * 3600, stall_s=600
                )[0]
            if rank == 0:
                records[s.norm] = (record, time.perf_counter() - t0)
                print(f"\nbnviz: {s.norm}: test accuracy {record.test_acc:.3f} (eval mode)", file=sys.stderr)
        if out:
            write(out, args, world_size, torchrun, records)
        if watch:
            _orderly_end(watch)
        return records
    finally:
        discard_created(created)
        if torchrun and dist.is_initialized():
            dist.destroy_process_group()


def _orderly_end(watch):
    """Every rank of torchrun's group waits for the others (rank 0 has written its files), stops watching, and
    leaves the group together: no rank tears the group down under a peer still using it."""
    try:
        dist.barrier()
    except RuntimeError as e:
        watch.fail_from(e)
    watch.finished()
    dist.destroy_process_group()


def _printer(every_rank, rank=0):
    """progress(rank, info) for the local group, or report(info) under torchrun: rank 0's step, on one line."""

    def show(*a):
        r, info = a if len(a) == 2 else (rank, a[0])
        if r == every_rank and (info["step"] % 50 == 0 or info["step"] == 1):
            sys.stderr.write(f"\rstep {info['step']}: loss {info['loss']:.4f}, accuracy {info['acc']:.3f}")
            sys.stderr.flush()

    return show


def parallel_summary(args, world_size, torchrun, records):
    lanes = []
    for norm, (r, seconds) in records.items():
        images = sum(args.batch_size for _ in r.steps)
        lanes.append(
            dict(
                norm=norm,
                steps=int(len(r.steps)),
                test_acc=r.test_acc,
                test_loss=r.test_loss,
                train_loss=float(r.loss[-1]) if len(r.loss) else None,
                images_per_s=images / seconds if seconds > 0 else None,
                bn1_spread=r.spread(),
            )
        )
    return dict(
        settings={k: v for k, v in vars(args).items() if k not in ("command",)},
        devices=world_size,
        bn_sync=args.bn_sync,
        launcher="torchrun" if torchrun else "local gloo group",
        backend=dist.get_backend() if dist.is_initialized() else "gloo",
        torch=torch.__version__,
        variants=lanes,
    )


def experiment_tables(args, records):
    """(header, lane views) for the experiment file: what the dashboard replays of a data-parallel run."""
    settings = Settings(
        lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed, train_size=args.train_size
    )
    per_epoch = max(1, num_batches(settings.train_size or 60_000, settings.batch_size))
    views = []
    for r, seconds in records.values():
        steps = np.asarray(r.steps, dtype=float)
        n = len(steps)
        last = float(steps[-1]) if n else 0.0
        final = dict(val_loss=[r.test_loss], val_acc=[r.test_acc])
        views.append(
            {
                "steps": dict(
                    step=steps,
                    epoch=1 + (steps - 1) // per_epoch,
                    lr=np.full(n, args.lr),
                    train_loss=np.asarray(r.loss, dtype=float),
                    train_acc=np.asarray(r.acc, dtype=float),
                ),
                "val": {k: np.asarray(v, dtype=float) for k, v in dict(step=[last], **final).items()} if n else {},
                "epochs": {
                    k: np.asarray(v, dtype=float)
                    for k, v in dict(
                        epoch=[1 + (last - 1) // per_epoch],
                        step=[last],
                        train_loss=[r.loss[-1]],
                        train_acc=[r.acc[-1]],
                        images_per_s=[args.batch_size * n / seconds if seconds > 0 else 0.0],
                        **final,
                    ).items()
                }
                if n
                else {},
            }
        )
    header = dict(
        name=f"data-parallel, {args.bn_sync} BN",
        settings=dataclasses.asdict(settings),
        device=f"cpu, {dist.get_world_size() if dist.is_initialized() else args.devices} processes (gloo)",
        lanes=[dict(norm=norm, activation=args.activation) for norm in records],
        torch=torch.__version__,
        saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    return header, views


def history_csv(records):
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(["lane", "step", "train_loss", "train_acc"])
    for norm, (r, _) in records.items():
        for step, loss, acc in zip(r.steps, r.loss, r.acc):
            w.writerow([norm, int(step), f"{loss:.6g}", f"{acc:.6g}"])
    return text.getvalue()


def write(out, args, world_size, torchrun, records):
    """The four files into ``out``, all or nothing (``run_folder.write_all``), summary.json last."""

    def bn1_statistics(path):
        arrays = {}
        for norm, (r, _) in records.items():
            for key in ("stats_steps", "bn1_means", "bn1_vars", "bn1_global_means", "bn1_global_vars"):
                if getattr(r, key) is not None:
                    arrays[f"{norm}/{key}"] = getattr(r, key)
        np.savez_compressed(path, **arrays)

    payload = json.dumps(parallel_summary(args, world_size, torchrun, records), indent=2, default=str)
    run_folder.write_all(
        out,
        {
            "experiment.npz": lambda path: save_experiment(path, *experiment_tables(args, records)),
            "history.csv": lambda path: run_folder.write_text(path, history_csv(records)),
            "bn1_statistics.npz": bn1_statistics,
            "summary.json": lambda path: run_folder.write_text(path, payload),
        },
    )
    print(f"bnviz: wrote {out / 'summary.json'}, experiment.npz, history.csv and bn1_statistics.npz", file=sys.stderr)
