"""The captured training step against ``train_step``: the same numbers, eager steps between, recapture on change.

On the CPU the static-buffer step (what is captured) is checked against ``train_step``; the tests marked
gpu check the replayed CUDA graph against it, alone and inside the engine (``bench/gpu_check.sh`` runs them).
"""

import copy

import pytest
import torch
from conftest import tiny_dataset

from bnviz.data.fashion_mnist import batches
from bnviz.machine import env
from bnviz.step.graphed_step import WARMUP_STEPS, EagerStep, GraphedStep, make_step, tensor_key, why_not_graphed
from bnviz.step.models import build_lenet, set_bn_bypass
from bnviz.step.probes import Probe
from bnviz.step.training import make_optimizer, train_step

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="a CUDA graph needs a CUDA GPU; there is none here")


def two_copies(norm, device, lr=0.5, activation="sigmoid"):
    a = build_lenet(norm, activation, seed=3).to(device)
    b = build_lenet(norm, activation, seed=3).to(device)
    return (a, make_optimizer(a, lr)), (b, make_optimizer(b, lr))


def stream(device, batch_size=32, epochs=2):
    data = tiny_dataset(256, 10)
    x, y = data.train_images.to(device), data.train_labels.to(device)
    for epoch in range(epochs):
        yield from batches(x, y, batch_size, shuffle=True, seed=1, epoch=epoch)


def compare(norm, device, capture, *, lr_change_at=5, eager_every=4, tol=1e-5):
    """Train two copies of one model on the same batches, one with train_step, one with GraphedStep."""
    (ref, ref_opt), (model, opt) = two_copies(norm, device)
    step = GraphedStep(model, opt, 0.5, 32, capture=capture)
    for i, (X, y) in enumerate(stream(device)):
        if i == lr_change_at:
            for group in ref_opt.param_groups:
                group["lr"] = 0.1
            step.set_lr(0.1)
        want = train_step(ref, ref_opt, X, y)
        got = step.eager(X, y) if i % eager_every == eager_every - 1 else step(X, y)  # a probed step runs eagerly
        torch.testing.assert_close(torch.stack(got).float(), torch.stack(want).float(), atol=tol * 32, rtol=tol)
    for (name, p), q in zip(ref.named_parameters(), model.parameters()):
        torch.testing.assert_close(q, p, atol=tol, rtol=tol, msg=name)
    for (name, b), c in zip(ref.named_buffers(), model.buffers()):
        torch.testing.assert_close(c, b, atol=tol, rtol=tol, msg=name)
    return step


def test_on_the_cpu_a_lane_steps_eagerly_and_a_probed_step_is_the_same_step(one_thread):
    """make_step gives the CPU an EagerStep: its step and its probed step are train_step exactly (the same
    operations in the same order: bit for bit), and its lr change reaches the optimiser."""
    (ref, ref_opt), (model, opt) = two_copies("scratch", "cpu")
    step = make_step(model, opt, 0.5, 32)
    assert isinstance(step, EagerStep) and not step.graphed
    for i, (X, y) in enumerate(stream("cpu", epochs=1)):
        if i == 3:
            for group in ref_opt.param_groups:
                group["lr"] = 0.1
            step.set_lr(0.1)
        want = train_step(ref, ref_opt, X, y)
        got = step.probed(X, y, "sigmoid")[:2] if i % 2 else step(X, y)
        assert torch.equal(torch.stack(got), torch.stack(want)), i
    assert opt.param_groups[0]["lr"] == 0.1
    assert all(torch.equal(p, q) for p, q in zip(ref.parameters(), model.parameters()))


@pytest.mark.parametrize("norm", ["none", "scratch", "torch", "ghost", "groupnorm", "frozen"])
def test_the_static_buffer_step_is_train_step(norm, one_thread):
    # what the graph captures, run without a graph: the same losses, counts, parameters and statistics,
    # with an lr change (a device tensor, no recapture) and eager steps between
    step = compare(norm, "cpu", capture=False)
    assert not step.graphed and step.lr.item() == pytest.approx(0.1)


def compare_probed(device, capture, activation="sigmoid", probe_every=3, tol=1e-4):
    """A probe every few steps: Probe.read after train_step against GraphedStep.probed; steps between.

    Each step starts the reference from the graphed copy's weights: a probe compares what both read from one
    state. Left to train apart, the copies' last-bit differences grow step by step at this lr (an AMD CPU's
    float32 sums took a median 4% away after 20 steps), which says nothing about the probe."""
    (ref, ref_opt), (model, opt) = two_copies("scratch", device, activation=activation)
    step = GraphedStep(model, opt, 0.5, 32, capture=capture)
    probes, lr = 0, 0.5
    for i, (X, y) in enumerate(stream(device)):
        with torch.no_grad():
            for mine, theirs in zip(ref.state_dict().values(), model.state_dict().values()):
                mine.copy_(theirs)
        if i == 10:  # a new lr: the probed graph's update and update-to-weight ratio read it too
            lr = 0.2
            for group in ref_opt.param_groups:
                group["lr"] = lr
            step.set_lr(lr)
        if i % probe_every:
            train_step(ref, ref_opt, X, y)
            step(X, y)
            continue
        with Probe(ref, activation) as probe:
            want = train_step(ref, ref_opt, X, y)
        want_scalars, want_vectors = probe.read(lr)
        *got, scalars, vectors = step.probed(X, y, activation)
        torch.testing.assert_close(torch.stack(got).float(), torch.stack(want).float(), atol=tol * 32, rtol=tol)
        assert set(scalars) == set(want_scalars) and set(vectors) == set(want_vectors)
        for name, value in want_scalars.items():
            assert scalars[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
        for name, value in want_vectors.items():  # a value on a bin's edge may fall either side: 1/32768
            torch.testing.assert_close(torch.as_tensor(vectors[name]), torch.as_tensor(value), atol=1e-3, rtol=1e-3)
        probes += 1
    assert probes >= 5 and lr == 0.2
    return step


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_a_probed_static_step_reads_what_an_eager_probe_reads(activation, one_thread):
    # the probed step that is captured (the step, then Probe.gather into one tensor), run without a graph
    step = compare_probed("cpu", capture=False, activation=activation)
    assert step.probe_graph is None and step.eager_probes == 0


def test_a_short_last_batch_runs_eagerly(one_thread):
    (model, opt), _ = two_copies("scratch", "cpu")
    step = GraphedStep(model, opt, 0.5, 32, capture=False)
    X, y = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    step(X, y)
    assert step.static_x is None  # the eager path, not the static buffers (sized for 32 images)


def test_layers_that_keep_python_state_are_never_captured():
    assert why_not_graphed(build_lenet("scratch")) is None
    assert "Renorm" in why_not_graphed(build_lenet("renorm"))
    assert "noise" in why_not_graphed(build_lenet("noisy"))


def test_switching_bn_off_changes_the_tensors_a_capture_holds():
    model = build_lenet("scratch")
    key = tensor_key(model)
    set_bn_bypass(model, True)
    assert tensor_key(model) != key
    set_bn_bypass(model, False)
    assert tensor_key(model) == key


def test_the_switch_reads_the_environment(monkeypatch):
    monkeypatch.delenv("BNVIZ_CUDA_GRAPHS", raising=False)
    assert env.cuda_graphs()
    for off in ("0", "false", "off"):
        monkeypatch.setenv("BNVIZ_CUDA_GRAPHS", off)
        assert not env.cuda_graphs()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("norm", ["none", "scratch", "torch", "ghost", "layernorm"])
def test_the_replayed_graph_is_train_step_on_a_gpu(norm):
    step = compare(norm, "cuda", capture=True, tol=1e-4)
    assert step.graphed and step.replays > 0


@pytest.mark.gpu
@needs_cuda
def test_bn_switched_off_is_captured_again_on_a_gpu():
    (model, opt), _ = two_copies("scratch", "cuda")
    step = GraphedStep(model, opt, 0.5, 32)
    data = list(stream("cuda", epochs=2))  # 16 batches: after the switch, warm-up steps again, then a capture
    for X, y in data[: WARMUP_STEPS + 2]:
        step(X, y)
    first = step.graph
    assert first is not None
    set_bn_bypass(model, True)
    for X, y in data[WARMUP_STEPS + 2 :]:
        step(X, y)
    assert step.graph is not first and step.graphed
    # the recaptured step is the plain network's step: one more step against train_step on a copy
    ref = copy.deepcopy(model)
    ref_opt = make_optimizer(ref, 0.5)
    X, y = data[0]
    want = train_step(ref, ref_opt, X, y)
    got = step(X, y)
    torch.testing.assert_close(torch.stack(got), torch.stack(want), atol=1e-3, rtol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_the_probed_graph_reads_what_an_eager_probe_reads_on_a_gpu():
    step = compare_probed("cuda", capture=True)
    assert step.graphed and step.probe_graph is not None and step.eager_probes >= 1


@pytest.mark.gpu
@needs_cuda
def test_a_probe_at_every_step_is_graphed_too_on_a_gpu():
    # no plain step ever comes: the eager probes are the warm-up, then the step and the probed step are captured
    step = compare_probed("cuda", capture=True, probe_every=1)
    assert step.graphed and step.probe_graph is not None and step.eager_probes == WARMUP_STEPS


@pytest.mark.gpu
@needs_cuda
def test_noisy_bn_trains_eagerly_on_a_gpu_and_says_why(capsys):
    (model, opt), _ = two_copies("noisy", "cuda")
    step = GraphedStep(model, opt, 0.5, 32, name="lane N")
    for X, y in list(stream("cuda", epochs=1))[: WARMUP_STEPS + 3]:
        step(X, y)
    assert not step.graphed
    assert "lane N trains eagerly, not as a CUDA graph: Noisy BN" in capsys.readouterr().err


@pytest.mark.gpu
@needs_cuda
def test_the_engine_records_the_same_numbers_with_and_without_graphs(make_experiment, monkeypatch):
    from bnviz.live.snapshot import Settings

    tables = []
    for graphs in ("1", "0"):
        monkeypatch.setenv("BNVIZ_CUDA_GRAPHS", graphs)
        exp = make_experiment(Settings(batch_size=32, val_size=50, val_every=5, probe_every=7, epochs=2, device="cuda"))
        exp.start()
        assert exp.wait(120)
        snap = exp.snapshot()
        tables.append([lane.tables for lane in snap.lanes])
        if graphs == "1":
            assert all(lane.stepper.graphed for lane in exp.lanes)
            assert all(lane.stepper.probe_graph is not None for lane in exp.lanes)  # probes at 0 (eager), 7, 14
    for graphed, eager in zip(*tables):
        for table in ("steps", "val", "probes", "epochs"):
            assert set(graphed[table]) == set(eager[table]) and len(graphed[table]["step"]) > 0
            for column in graphed[table]:
                if column == "images_per_s":
                    continue
                torch.testing.assert_close(
                    torch.as_tensor(graphed[table][column]).double(),
                    torch.as_tensor(eager[table][column]).double(),
                    atol=1e-3,
                    rtol=1e-3,
                    msg=f"{table}.{column}",
                )
