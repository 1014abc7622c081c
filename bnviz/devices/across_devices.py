"""The "BN across devices" study: one global minibatch spread over k devices, BN per device or synchronised.

    results = across_devices(data, ks=(1, 2, 4, 8, 16, 32, 64), per_device=True, steps=300)
    results[8].test_acc, results[8].per_device_batch        # 128 / 8 = 16 images a device

Each k trains LeNet for ``steps`` steps on the same seeded global minibatches of ``batch_size``, cut into k
slices. With ``per_device=True`` each slice is normalised with its own statistics (DDP's default); with
``per_device=False`` with the whole minibatch's (synchronised BN), which is the same arithmetic for every k:
the k curves coincide, the point of synchronising. Everything runs in this one process, each device's
statistics computed on its slice (``device_slices``; checked against k gloo processes in
tests/test_data_parallel.py), so k = 64 costs about what k = 1 does. Pure: no engine, no threads; a study
job calls it with ``progress(fraction)`` and ``should_stop()``.
"""

from dataclasses import dataclass

from bnviz.devices.data_parallel import ParallelSettings, train


@dataclass(frozen=True)
class DevicesResult:
    devices: int  # k
    per_device_batch: float  # batch_size / k (slices differ by at most one image)
    per_device: bool  # BN per device (True) or synchronised (False)
    test_acc: float  # eval mode (running statistics: device 0's under per-device BN), after ``steps``
    test_loss: float
    steps: tuple  # step numbers
    loss: tuple  # the whole minibatch's training loss at each step
    acc: tuple  # ... and accuracy
    bn1_spread: tuple  # dicts (step, mean_spread, var_low, var_high): devices' bn1 statistics against the whole's
    seconds: float  # wall time of this k's training


def across_devices(
    data,
    ks=(1, 2, 4, 8, 16, 32, 64),
    *,
    per_device=True,
    steps=300,
    batch_size=128,
    lr=0.1,
    norm="scratch",
    activation="sigmoid",
    seed=0,
    eval_size=None,
    stats_every=50,
    progress=None,
    should_stop=None,
):
    """{k: DevicesResult} for each k in ``ks``; the ks finished so far if ``should_stop()`` turned true.

    data: a FashionMNISTData. norm: scratch or torch (any norm runs; for one without batch statistics every k is
    the same). Every k must leave each device 2 images: k <= batch_size // 2.
    """
    import time

    bad = [k for k in ks if k < 1 or batch_size // k < 2]
    if bad:
        raise ValueError(f"each of {batch_size} images' {bad} devices would get fewer than 2 images")
    results = {}
    for i, k in enumerate(ks):
        settings = ParallelSettings(
            norm=norm,
            activation=activation,
            lr=lr,
            batch_size=batch_size,
            steps=steps,
            epochs=10_000,  # as many as the steps need
            seed=seed,
            bn_sync="device" if per_device else "global",
            stats_every=stats_every,
            eval_size=eval_size,
        )

        def report(info, i=i):
            if progress:
                progress((i + info["step"] / steps) / len(ks))

        stopped = should_stop or (lambda: False)
        t0 = time.perf_counter()
        r = train(data, settings, devices=k, report=report, should_stop=stopped)
        if stopped():
            break
        results[k] = DevicesResult(
            devices=k,
            per_device_batch=batch_size / k,
            per_device=per_device,
            test_acc=r.test_acc,
            test_loss=r.test_loss,
            steps=tuple(int(s) for s in r.steps),
            loss=tuple(float(x) for x in r.loss),
            acc=tuple(float(x) for x in r.acc),
            bn1_spread=tuple(r.spread()),
            seconds=time.perf_counter() - t0,
        )
    return results
