"""Which device to train on, and how many CPU threads torch should use for these tiny models."""

import os

import torch

from bnviz.machine import env

DEVICES = ("auto", "cpu", "cuda", "mps")


class DeviceError(RuntimeError):
    """The device asked for is not available; the message says what to do."""


def mps_available():
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name="auto"):
    """'auto' picks CUDA, then MPS, then the CPU; asking for an absent device is a DeviceError."""
    name = (name or "auto").lower()
    if name not in DEVICES:
        raise DeviceError(f"Unknown device {name!r}: choose one of {', '.join(DEVICES)}.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "CUDA was asked for but this machine has no usable CUDA GPU "
            "(or torch was installed without CUDA). Use --device auto or cpu."
        )
    if name == "mps" and not mps_available():
        raise DeviceError("MPS (Apple GPU) was asked for but is not available here. Use --device auto or cpu.")
    return torch.device(name)


def describe(device):
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "MPS (Apple GPU)"
    return f"CPU ({torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() != 1 else ''})"


def choose_threads(shared):
    """Intra-op threads for LeNet-sized work.

    Measured on 2 cores (docs/PERFORMANCE.md): on a quiet machine two threads train 1.4x faster than one;
    with anything else busy on the cores (the dashboard's server, a browser) two are 3-6x slower. So the
    headless CLI uses up to 4 cores, and anything sharing the machine keeps two cores free.
    $BNVIZ_THREADS overrides both.
    """
    if env.threads():
        return env.threads()  # the user knows this machine
    cores = os.cpu_count() or 1
    return max(1, min(4, cores - 2)) if shared else max(1, min(4, cores))


def yield_to_the_page(step):
    """Lower this (training) process's CPU priority by ``step`` (``$BNVIZ_CHILD_NICE``, read by the parent: 10):
    when the cores are short, the web server and the browser run first, so a page still loads and redraws while
    several experiments and studies train; on idle cores training runs as fast as before. Returns the niceness
    now (None: not lowered)."""
    if not step or not hasattr(os, "nice"):
        return None
    try:
        return os.nice(step)
    except OSError:  # not allowed here: train at the priority we have
        return None


def set_torch_threads(shared):
    n = choose_threads(shared)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
