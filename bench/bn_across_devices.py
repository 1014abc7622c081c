"""BN per device against synchronised BN, on the real Fashion-MNIST (docs/BN_ACROSS_DEVICES.md).

1. Accuracy: a global minibatch of 128 spread over k = 128 / b devices, per-device batch b = 2 ... 64; eval-mode
   test accuracy after the same steps, BN per device vs synchronised (in one process: each device's statistics
   on its slice, bnviz.devices.across_devices; synchronised BN is one run, the same for every k).
2. The in-process arithmetic against k gloo processes at k = 2 and 4 (real data, a few steps): weight gap.
3. The cost of synchronisation per step on gloo: k = 2 and 4 processes, per-device batch b, median step time
   with BN per device and with our synchronised BN (8 more all-reduces a step: 4 layers, forward and backward).

    .venv/bin/python bench/bn_across_devices.py [--steps 400] [--timing-steps 40]
"""

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from bnviz.data.fashion_mnist import load_fashion_mnist
from bnviz.devices.across_devices import across_devices
from bnviz.devices.data_parallel import ParallelSettings, train, train_rank
from bnviz.devices.process_group import run_local_group

PER_DEVICE_BATCHES = (2, 4, 8, 16, 32, 64)
GLOBAL_BATCH = 128


def accuracy(data, steps, seeds):
    rows = []
    ks = tuple(GLOBAL_BATCH // b for b in PER_DEVICE_BATCHES)
    for seed in seeds:
        synced = across_devices(data, ks=(1,), per_device=False, steps=steps, seed=seed)[1]
        per = across_devices(data, ks=ks, per_device=True, steps=steps, seed=seed)
        for k, r in per.items():
            rows.append(
                dict(
                    seed=seed,
                    devices=k,
                    per_device_batch=GLOBAL_BATCH // k,
                    per_device_acc=r.test_acc,
                    synced_acc=synced.test_acc,
                    per_device_final_loss=float(np.mean(r.loss[-50:])),
                    synced_final_loss=float(np.mean(synced.loss[-50:])),
                    bn1_mean_spread_last=r.bn1_spread[-1]["mean_spread"],
                    bn1_var_range_last=(r.bn1_spread[-1]["var_low"], r.bn1_spread[-1]["var_high"]),
                    seconds=r.seconds,
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def gap(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def in_process_check(data, steps=20, b=8):
    rows = []
    for k in (2, 4):
        s = ParallelSettings(batch_size=k * b, steps=steps, eval_size=1000)
        for bn_sync in ("device", "global"):
            s2 = ParallelSettings(**{**s.__dict__, "bn_sync": bn_sync})
            ranks = run_local_group(train_rank, k, data, s2, timeout_s=600)
            one = train(data, s2, devices=k)
            rows.append(dict(devices=k, bn_sync=bn_sync, steps=steps, max_weight_gap=gap(ranks[0].state, one.state)))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def sync_cost(data, steps):
    rows = []
    for k in (2, 4):
        for b in PER_DEVICE_BATCHES:
            times = {}
            for bn_sync in ("device", "global"):
                s = ParallelSettings(batch_size=k * b, steps=steps, bn_sync=bn_sync, stats_every=10**9, eval_size=100)
                ranks = run_local_group(train_rank, k, data, s, timeout_s=600)
                times[bn_sync] = float(np.median(ranks[0].step_s[5:])) * 1e3
            rows.append(
                dict(
                    devices=k,
                    per_device_batch=b,
                    step_ms_per_device=times["device"],
                    step_ms_synced=times["global"],
                    sync_ms=times["global"] - times["device"],
                )
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--timing-steps", type=int, default=40)
    p.add_argument("--out", default="bench/bn_across_devices.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    data = load_fashion_mnist()
    machine = dict(
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        torch=torch.__version__,
        python=platform.python_version(),
        threads_per_process=1,
    )
    t0 = time.time()
    result = dict(machine=machine, steps=a.steps, global_batch=GLOBAL_BATCH)
    result["in_process_check"] = in_process_check(data)
    result["sync_cost"] = sync_cost(data, a.timing_steps)
    result["accuracy"] = accuracy(data, a.steps, a.seeds)
    result["seconds"] = time.time() - t0
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
