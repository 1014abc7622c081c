"""The training step captured once as a CUDA graph and replayed: the same step as ``training.train_step``.

On a GPU, LeNet's step is a few dozen tiny kernels, each launched from Python, and the GPU waits on the
launcher. A CUDA graph records the launches once; a replay sends them all at once. A replay keeps no Python
in the loop, so everything the step reads or writes must stay where it was at capture:

- the batch is copied into the same input and label tensors every step, and the summed loss and the count
  correct come out in the same 2-element tensor, cloned before the next replay overwrites it;
- the SGD update is inside the graph and reads the learning rate from a device tensor: the live lr slider
  changes it with ``fill_``, no new capture;
- the gradients are made by the captured backward pass (they are None when capture starts, so each replay
  writes them, never adds to them).

A probed step (``probed``) is a second graph: the same step, then the probe's numbers (``Probe.gather``:
histograms, percentiles, statistics, gradient norms) into one static tensor, fetched in one transfer. It is
captured at the first probed step after the step's own capture; probes before it run eagerly (they also
draw the probe's sample positions, which a capture cannot). With a probe at every step, the eager probes are
the warm-up, and the step and the probed step are captured in the same call.

What changes the step's code or its tensors (BN switched off, a parameter or buffer replaced, a new batch
shape) makes new captures at the next steps; a step the graph cannot take (an epoch's last, shorter batch)
runs eagerly on the same parameters. A model with a layer that keeps state in
Python (Batch Renorm's step count) or draws its noise on the CPU (Noisy BN) is never captured, and says so
once on stderr. ``capture=False`` runs the same static-buffer step without a graph: on the CPU the tests
check it against ``train_step``; the GPU tests check the graph against both.
"""

import sys
import threading
import time

import torch

from bnviz.norms.batch_renorm import BatchRenorm
from bnviz.norms.noisy_batchnorm import NoisyBatchNorm
from bnviz.step.probes import Probe, probed, unpack
from bnviz.step.training import loss_fn, train_step

WARMUP_STEPS = 3  # eager steps, on a side stream, before a capture (cuBLAS/cuDNN set themselves up)
_said: set[str] = set()
_capturing = threading.Lock()  # one capture at a time: experiments in threads (BNVIZ_ENGINE=thread) share one GPU


def say_once(message):
    if message not in _said:
        _said.add(message)
        print(f"bnviz: {message}", file=sys.stderr, flush=True)


def why_not_graphed(model):
    """None if the model's training step can be captured, else why not (a sentence)."""
    for module in model.modules():
        if isinstance(module, BatchRenorm):
            return "Batch Renorm counts its steps in Python (r_max and d_max grow with them)"
        if isinstance(module, NoisyBatchNorm):
            return "Noisy BN draws its noise on the CPU every step"
    return None


class EagerStep:
    """The training step as written, run with Python in the loop every time: the CPU's step (and a GPU's with
    CUDA graphs switched off). The same interface as ``GraphedStep``: ``step(X, y)``, ``step.probed(X, y,
    activation)``, ``step.set_lr(lr)``."""

    graphed = False

    def __init__(self, model, optimizer, lr):
        self.model, self.optimizer, self.lr = model, optimizer, float(lr)

    def set_lr(self, lr):
        self.lr = float(lr)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr

    def __call__(self, X, y):
        """(summed loss, number correct) as 0-d tensors."""
        return train_step(self.model, self.optimizer, X, y)

    def probed(self, X, y, activation):
        """The step with a probe attached: (loss, correct, scalars, vectors)."""
        return probed(self.model, activation, self.lr, train_step, self.model, self.optimizer, X, y)


def make_step(model, optimizer, lr, batch_size, *, name="lane", graphs=True):
    """A ``GraphedStep`` on a GPU (unless ``graphs`` is false), an ``EagerStep`` elsewhere."""
    if graphs and next(model.parameters()).device.type == "cuda":
        return GraphedStep(model, optimizer, lr, batch_size, name=name)
    return EagerStep(model, optimizer, lr)


def tensor_key(model):
    """Where every parameter and buffer lives: a capture is valid while this stays the same."""
    return tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))


class GraphedStep:
    """``step(X, y)`` -> (summed loss, number correct) as 0-d tensors, like ``train_step``; keeps the lr."""

    def __init__(self, model, optimizer, lr, batch_size, *, capture=True, name="lane"):
        self.model, self.optimizer, self.batch_size, self.name = model, optimizer, batch_size, name
        self.lr = torch.tensor(float(lr), device=next(model.parameters()).device)
        self.capture = capture and self.lr.device.type == "cuda"
        self.problem = why_not_graphed(model) if self.capture else None
        if self.problem:
            say_once(f"{name} trains eagerly, not as a CUDA graph: {self.problem}")
        self.graph, self.key, self.warm, self.capture_s, self.replays = None, None, 0, None, 0
        self.static_x = self.static_y = self.static_out = None
        self.probe_graph, self.probe_static, self.probe_problem, self.eager_probes = None, None, None, 0

    @property
    def graphed(self):
        return self.graph is not None

    def set_lr(self, lr):
        """The new learning rate, for the graph (a device tensor) and the eager steps (the optimiser)."""
        self.lr.fill_(float(lr))
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def reset(self):
        """Capture again before the next graphed step (the model's code or tensors changed)."""
        self.graph, self.key, self.warm = None, None, 0
        self.probe_graph, self.probe_static, self.eager_probes = None, None, 0

    def _drop_if_stale(self):
        """The model's tensors moved since the capture (BN switched off, a layer replaced): capture again."""
        if self.graph is not None and self.key != tensor_key(self.model):
            self.reset()

    def eager(self, X, y):
        """One step with Python in the loop: ``train_step`` itself, on the same parameters."""
        return train_step(self.model, self.optimizer, X, y)

    def __call__(self, X, y):
        if self.problem or X.shape[0] != self.batch_size:  # or the epoch's last, shorter batch
            return self.eager(X, y)
        if not self.capture:
            return self._static_step(X, y)
        self._drop_if_stale()
        if self.graph is not None:
            return self._replay(X, y)
        if self.warm < WARMUP_STEPS:
            self.warm += 1
            return self._side_stream(self.eager, X, y)
        try:
            self._record(X, y)
            return self._replay(X, y)  # capture records the kernels without running them: this step runs now
        except Exception as e:  # noqa: BLE001 - any failure to capture falls back to eager, said once
            self._give_up(e)
            return self.eager(X, y)

    def _give_up(self, e):
        self.graph, self.problem = None, f"capture failed ({type(e).__name__}: {e})"
        say_once(f"{self.name} trains eagerly, not as a CUDA graph: {self.problem}")
        torch.cuda.synchronize()

    def probed(self, X, y, activation):
        """A step with a probe: (summed loss, number correct, scalars, vectors), as ``Probe.read`` after
        ``train_step``; replayed from its own graph once the step's graph exists and one probe ran eagerly."""
        if not self.problem and X.shape[0] == self.batch_size:
            if not self.capture:
                self._load(X, y)
                self.optimizer.zero_grad(set_to_none=True)
                out, names, sizes, flat = self._probed_body(activation)
                return out[0], out[1], *unpack(names, sizes, flat.cpu().numpy())
            self._drop_if_stale()
            if self.graph is None and self.warm >= WARMUP_STEPS:  # probes at (nearly) every step: capture the
                try:  # step here, so that the probed graph, which needs it, comes next
                    self._record(X, y)
                except Exception as e:  # noqa: BLE001 - as in __call__: eager from now on, said once
                    self._give_up(e)  # no graph: this probe runs eagerly below
            ready = self.graph is not None and self.eager_probes > 0 and not self.probe_problem
            if ready and self.probe_graph is not None and self.probe_static[0] == activation:
                return self._replay_probed(X, y)
            if ready:
                try:
                    return self._capture_probed(X, y, activation)
                except Exception as e:  # noqa: BLE001 - probes go on eagerly, the step stays graphed
                    self.probe_graph, self.probe_problem = None, f"capture failed ({type(e).__name__}: {e})"
                    say_once(f"{self.name} probes eagerly, not as a CUDA graph: {self.probe_problem}")
                    torch.cuda.synchronize()
        self.eager_probes += 1
        if self.capture and self.graph is None and not self.problem and X.shape[0] == self.batch_size:
            self.warm += 1  # an eager probe warms up for the capture as an eager step does, on a side stream
            return self._side_stream(probed, self.model, activation, float(self.lr), self.eager, X, y)
        return probed(self.model, activation, float(self.lr), self.eager, X, y)

    def _probed_body(self, activation):
        with Probe(self.model, activation) as probe:  # its hooks catch the forward pass's tensors
            out = self._body()
        return (out, *probe.gather(self.lr))  # the update-to-weight ratio reads the lr tensor too

    def _capture_probed(self, X, y, activation):
        self._load(X, y)
        torch.cuda.synchronize()
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with _capturing, torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out, names, sizes, flat = self._probed_body(activation)
        self.probe_graph, self.probe_static = graph, (activation, out, names, sizes, flat)
        say_once(f"{self.name} probes as a CUDA graph too")
        return self._replay_probed(X, y)

    def _replay_probed(self, X, y):
        _, out, names, sizes, flat = self.probe_static
        self.static_x.copy_(X)
        self.static_y.copy_(y)
        self.probe_graph.replay()
        self.replays += 1
        step = out.clone()  # on the device, as every other step's (the next replay overwrites out)
        host = flat.cpu().numpy()  # one transfer, the one sync a probe needs
        return step[0], step[1], *unpack(names, sizes, host)

    # the step that is captured: static input, labels and output; the update reads self.lr
    def _body(self):
        self.model.train()
        logits = self.model(self.static_x)  # (B, 10)
        loss = loss_fn(logits, self.static_y)  # summed over the batch, as train_step
        (loss / self.static_x.shape[0]).backward()
        with torch.no_grad():
            for p in self.model.parameters():
                if p.grad is not None:
                    p.sub_(p.grad * self.lr)  # SGD: p <- p - lr * grad
        correct = (logits.detach().argmax(1) == self.static_y).sum()
        return torch.stack([loss.detach(), correct.to(loss.dtype)])  # (2,)

    def _load(self, X, y):
        if self.static_x is None or self.static_x.shape != X.shape:
            self.static_x, self.static_y = torch.empty_like(X), torch.empty_like(y)
        self.static_x.copy_(X)
        self.static_y.copy_(y)

    def _static_step(self, X, y):
        self._load(X, y)
        self.optimizer.zero_grad(set_to_none=True)  # the captured step writes the gradients, never adds
        out = self._body()
        return out[0], out[1]

    def _replay(self, X, y):
        self.static_x.copy_(X)
        self.static_y.copy_(y)
        self.graph.replay()
        self.replays += 1
        out = self.static_out.clone()  # the next replay overwrites static_out
        return out[0], out[1]

    @staticmethod
    def _side_stream(fn, *args):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        return out

    def _record(self, X, y):
        """Capture the step (nothing runs: the next replay is its first run)."""
        t0 = time.perf_counter()
        self._load(X, y)
        torch.cuda.synchronize()
        self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates them in the graph's pool
        graph = torch.cuda.CUDAGraph()
        with _capturing, torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads go on
            self.static_out = self._body()
        self.graph, self.key = graph, tensor_key(self.model)
        self.capture_s = time.perf_counter() - t0
        say_once(f"{self.name} trains as a CUDA graph (captured in {self.capture_s * 1000:.0f} ms)")
