"""The Experiments view's "BN across devices" study: per-device against synchronised BN, for k = 1 to 64 devices.

One global minibatch of 128 is cut into k slices (down to 2 images a device). With BN per device (what
DistributedDataParallel does by default) each slice is normalised by its own statistics; with synchronised BN
(``nn.SyncBatchNorm``, ``bnviz/devices/sync_batchnorm.py``) by the whole minibatch's. The devices are simulated in one
process, each device's statistics computed on its slice (``across_devices``: the same arithmetic as k gloo
processes, checked by a test at k = 2 and 4), so the study runs anywhere.

    both = devices_study(data)          # {"per device": {k: DevicesResult}, "synchronised": {k: ...}}
    text = devices_summary(both)
"""

from bnviz.devices.across_devices import across_devices

KS = (1, 2, 4, 8, 16, 32, 64)
MODES = ("per device", "synchronised")


def devices_study(data, ks=KS, steps=300, *, eval_size=None, progress=None, should_stop=None):
    """Both modes for each k: {mode: {k: DevicesResult}}; tested on the first ``eval_size`` test images (all)."""
    both = {}
    for j, mode in enumerate(MODES):
        report = (lambda f, j=j: progress((j + f) / len(MODES))) if progress else None
        both[mode] = across_devices(
            data,
            ks,
            per_device=mode == "per device",
            steps=steps,
            eval_size=eval_size,
            progress=report,
            should_stop=should_stop,
        )
        if should_stop and should_stop():
            break
    return both


def devices_summary(both):
    """What the two curves show, read from them: each mode's accuracy at the fewest and the most devices."""
    parts = []
    for mode in MODES:
        runs = both.get(mode, {})
        if len(runs) < 2:
            continue
        first, last = runs[min(runs)], runs[max(runs)]
        parts.append(
            f"{mode}: {100 * first.test_acc:.1f}% on {first.devices} device{'s' if first.devices > 1 else ''} "
            f"({first.per_device_batch:g} images each), {100 * last.test_acc:.1f}% on {last.devices} "
            f"({last.per_device_batch:g} each)"
        )
    if not parts:
        return "Not run yet."
    return "Test accuracy after the same steps: " + "; ".join(parts) + "."
