"""Which device to train on, and how many CPU threads: resolve_device, describe, choose_threads, BNVIZ_THREADS."""

import pytest
import torch

import bnviz.machine.device as devices
from bnviz.machine import env
from bnviz.machine.device import DeviceError, choose_threads, resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine with neither CUDA nor MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


def test_auto_picks_cuda_then_mps_then_the_cpu(monkeypatch, no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("") == torch.device("cpu")  # auto when nothing is asked
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("AUTO") == torch.device("cuda")


def test_cpu_is_always_there(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:0", "metal"])
def test_an_unknown_device_is_a_device_error_that_lists_the_choices(name):
    with pytest.raises(DeviceError) as info:
        resolve_device(name)
    msg = str(info.value)
    assert f"Unknown device {name!r}" in msg and "auto, cpu, cuda, mps" in msg


def test_cuda_asked_for_without_cuda_says_what_to_do(no_gpu):
    with pytest.raises(DeviceError) as info:
        resolve_device("cuda")
    msg = str(info.value)
    assert msg.startswith("CUDA was asked for") and "--device auto or cpu" in msg
    with pytest.raises(DeviceError, match="MPS .* not available"):
        resolve_device("mps")
    assert issubclass(DeviceError, RuntimeError)


def test_describe_the_cpu_counts_torch_threads(one_thread):
    assert devices.describe("cpu") == "CPU (1 torch thread)"
    torch.set_num_threads(2)
    assert devices.describe(torch.device("cpu")) == "CPU (2 torch threads)"


def test_mps_is_described_without_asking_the_device():
    assert devices.describe(torch.device("mps")) == "MPS (Apple GPU)"


# ------------------------------------------------------------------------------------------- threads
@pytest.mark.parametrize(
    "cores, shared, expected",
    [
        (1, True, 1),
        (2, True, 1),  # sharing two cores with a server and a browser: one thread
        (2, False, 2),  # the headless CLI on a quiet two-core machine: both
        (4, True, 2),
        (8, True, 4),
        (64, False, 4),  # never more than four for LeNet-sized work
        (None, False, 1),  # os.cpu_count() may not know
    ],
)
def test_choose_threads_by_cores(monkeypatch, cores, shared, expected):
    monkeypatch.delenv("BNVIZ_THREADS", raising=False)
    monkeypatch.setattr(devices.os, "cpu_count", lambda: cores)
    assert choose_threads(shared) == expected


@pytest.mark.parametrize("shared", [True, False])
def test_bnviz_threads_overrides_the_choice(monkeypatch, shared):
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("BNVIZ_THREADS", "7")
    assert env.threads() == 7
    assert choose_threads(shared) == 7


@pytest.mark.parametrize("raw", ["0", "-2", "many", "1.5"])
def test_an_unusable_bnviz_threads_is_ignored_with_a_warning(monkeypatch, capsys, raw):
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(env, "_warned", set())
    monkeypatch.setenv("BNVIZ_THREADS", raw)
    assert env.threads() is None
    assert choose_threads(True) == 4  # as if it were not set
    err = capsys.readouterr().err
    assert err.count("ignoring BNVIZ_THREADS") == 1 and repr(raw) in err  # said once, not at every read


def test_no_bnviz_threads_lets_bnviz_choose(monkeypatch):
    monkeypatch.delenv("BNVIZ_THREADS", raising=False)
    assert env.threads() is None
    monkeypatch.setenv("BNVIZ_THREADS", "  ")
    assert env.threads() is None


def test_set_torch_threads_applies_the_choice(monkeypatch, one_thread):
    monkeypatch.setenv("BNVIZ_THREADS", "3")
    assert devices.set_torch_threads(shared=True) == 3
    assert torch.get_num_threads() == 3
