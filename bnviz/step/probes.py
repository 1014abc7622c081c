"""Look inside a training step: hooks that catch the tensors around each BN position, and the numbers
the dashboard draws from them.

Hooks in the style of fastai's ``callback/hook.py``: ``Hook`` keeps what a module's forward pass
produced; ``Hooks`` is a list of them; both are context managers that remove themselves on exit, so a
model is never left with a stale hook.

At every BN position (bn1..bn4) a probe records, from the very forward pass that trained the model:
- the tensor entering BN (the conv/linear output; for a lane without BN, the tensor that *would* enter
  it), leaving BN, and after the activation (from a fixed random subset of at most 32,768 values, which
  keeps a probe cheap): histograms over fixed bins shared by every lane, so
  before/after and BN on/off compare bar for bar; the 15th, 50th and 85th percentiles (Ioffe & Szegedy
  2015, Figure 1); mean and std; the fraction of saturated units (sigmoid < 0.05 or > 0.95, or ReLU = 0);
- per channel: the batch mean and variance; the running mean and variance, gamma and beta, those of them the
  layer holds (``norm_state``: LayerNorm and GroupNorm have gamma and beta but no running statistics, BN
  that only centres has no running variance);
- per weight layer: the gradient norm and the update-to-weight ratio ``lr * |grad| / |w|`` (plain SGD).
All of it is gathered into one tensor on the device (``gather``, which a CUDA graph can capture) and moved to
the CPU in one transfer (``read``).
"""

from functools import partial

import numpy as np
import torch
from torch import nn

from bnviz.step.models import BN_ACTIVATIONS, BN_INPUTS, BN_LAYERS, FULL_STATE

HIST_RANGE = (-5.0, 5.0)  # bins for the tensors entering and leaving BN: 0.1 wide
HIST_BINS = 100
ACT_RANGES = {"sigmoid": (0.0, 1.0), "relu": (0.0, 6.0)}  # bins for the activation's output
ACT_BINS = 40
PERCENTILES = (0.15, 0.50, 0.85)
WEIGHT_LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")
HIST_SAMPLE = 32_768  # histograms, mean, std and saturation from a random subset this big
QUANTILE_SAMPLE = 4_096  # percentiles from 4,096 of those (standard error < 1 percentile point)
SATURATION = (0.05, 0.95)


def bin_edges(kind, activation="sigmoid", bins=None):
    """Edges of the fixed bins for 'in'/'out' (entering/leaving BN) or 'act' histograms."""
    lo, hi = HIST_RANGE if kind != "act" else ACT_RANGES[activation]
    return np.linspace(lo, hi, (bins or (HIST_BINS if kind != "act" else ACT_BINS)) + 1)


class Hook:
    """Keep the output of ``module``'s forward pass in ``self.stored`` until removed."""

    def __init__(self, module, fn=None):
        self.stored = None
        self.handle = module.register_forward_hook(partial(fn or _keep_output, self))

    def remove(self):
        """Take the hook off its module; a second call does nothing."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _keep_output(hook, module, inputs, output):
    hook.stored = output.detach()


class Hooks(list):
    """A Hook on each module; removed together."""

    def __init__(self, modules, fn=None):
        super().__init__(Hook(m, fn) for m in modules)

    def remove(self):
        """Take every hook off; a second call does nothing."""
        for h in self:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


# Where each piece of state lives: our layers' names first, then torch's (BatchNorm, LayerNorm, GroupNorm).
STATE_ATTRIBUTES = {
    "running_mean": ("moving_mean", "running_mean"),
    "running_var": ("moving_var", "running_var"),
    "gamma": ("gamma", "weight"),
    "beta": ("beta", "bias"),
}


def norm_state(layer):
    """{name: tensor} of what a normalisation layer holds, among running_mean, running_var, gamma and beta.

    Only what exists: {} for ``nn.Identity`` (no BN), gamma and beta for LayerNorm and GroupNorm.
    """
    if isinstance(layer, nn.Identity):
        return {}
    state = {}
    for name, attributes in STATE_ATTRIBUTES.items():
        found = [getattr(layer, a) for a in attributes if isinstance(getattr(layer, a, None), torch.Tensor)]
        if found:
            state[name] = found[0]
    return state


def bn_state(layer):
    """(running_mean, running_var, gamma, beta) of a layer that holds all four (any BN); None otherwise."""
    state = norm_state(layer)
    return tuple(state[name] for name in FULL_STATE) if set(state) == set(FULL_STATE) else None


def _histogram(x, lo, hi, bins):
    """Counts over fixed bins, values outside clamped into the end bins, as fractions of the total."""
    counts = torch.histc(x.clamp(lo, hi), bins=bins, min=lo, max=hi)
    return counts / x.numel()


_sample_index: dict = {}


def _sample(flat, size):
    """A fixed random subset of ``size`` values (all of them when there are fewer): unbiased, and cheap.

    The same positions are drawn at every probe of a tensor of this size, so probes compare like with like.
    """
    n = flat.numel()
    if n <= size:
        return flat.float()
    key = (n, size, flat.device)
    if key not in _sample_index:
        if flat.is_cuda and torch.cuda.is_current_stream_capturing():  # drawn on the CPU: not while capturing
            raise RuntimeError("a probe's sample positions are drawn by an eager probe before any capture")
        g = torch.Generator().manual_seed(n)
        _sample_index[key] = torch.randint(0, n, (size,), generator=g).to(flat.device)
    return flat.index_select(0, _sample_index[key]).float()


class Probe:
    """Attach with ``with Probe(model) as probe:``, run one training step, then ``probe.read(lr)``."""

    def __init__(self, model, activation="sigmoid"):
        self.model, self.activation = model, activation
        self.modules = {
            kind: [getattr(model, n) for n in names]
            for kind, names in (("in", BN_INPUTS), ("out", BN_LAYERS), ("act", BN_ACTIVATIONS))
        }

    def __enter__(self):
        self.hooks = {kind: Hooks(mods) for kind, mods in self.modules.items()}
        return self

    def __exit__(self, *exc):
        for h in self.hooks.values():
            h.remove()

    def read(self, lr):
        """(scalars, vectors): numbers for the probe table and arrays for the distribution store."""
        names, sizes, flat = self.gather(lr)
        return unpack(names, sizes, flat.cpu().numpy())  # one transfer, the one sync a probe needs

    @torch.no_grad()
    def gather(self, lr):
        """(names, sizes, flat): every number of the probe in one float tensor on the model's device.

        Only device work and no sync, so a CUDA graph can capture it; ``lr`` is a float or a 0-d tensor.
        """
        named = []  # (name, tensor), moved to the CPU together at the end
        act_lo, act_hi = ACT_RANGES[self.activation]
        few = {}  # for the percentiles: a prefix of each sample (random, so any prefix is too), sorted together
        for i, pos in enumerate(BN_LAYERS):
            for kind in ("in", "out", "act"):
                x = _sample(self.hooks[kind][i].stored.reshape(-1), HIST_SAMPLE)
                lo, hi, bins = (act_lo, act_hi, ACT_BINS) if kind == "act" else (*HIST_RANGE, HIST_BINS)
                named.append((f"{pos}.{kind}.hist", _histogram(x, lo, hi, bins)))
                few[f"{pos}.{kind}"] = x[:QUANTILE_SAMPLE]
                named.append((f"{pos}.{kind}.mean_std", torch.stack([x.mean(), x.std()])))
            a = x  # the activation's sample
            saturated = (a <= 0) if self.activation == "relu" else ((a < SATURATION[0]) | (a > SATURATION[1]))
            named.append((f"{pos}.saturated", saturated.float().mean().reshape(1)))
            x = self.hooks["in"][i].stored.float()
            dims = (0, 2, 3) if x.dim() == 4 else (0,)
            n = x.numel() // x.shape[1]
            # sums, not var_mean: 10x cheaper over (0, 2, 3); about one value of each channel (the first image's),
            # so that a mean far from 0 (a lane that does not centre) does not cancel the variance's digits away
            shift = x[:1, :, :1, :1] if x.dim() == 4 else x[:1]
            xs = x - shift
            mean_s = xs.sum(dim=dims) / n
            var = ((xs * xs).sum(dim=dims) / n - mean_s * mean_s).clamp_min(0)
            mean = mean_s + shift.reshape(-1)
            named += [(f"{pos}.batch_mean", mean), (f"{pos}.batch_var", var)]
            for name, t in norm_state(getattr(self.model, pos)).items():
                named.append((f"{pos}.{name}", t.detach().reshape(-1).float()))
        n = min(len(v) for v in few.values())  # every tensor here holds at least 2 x 84 values
        ranked = torch.stack([v[:n] for v in few.values()]).sort(dim=1).values
        at = [min(n - 1, round(p * (n - 1))) for p in PERCENTILES]
        pct = torch.stack([ranked[:, a] for a in at], dim=1)  # (rows, 3); no index list (a copy from the CPU)
        for name, row in zip(few, pct):
            named.append((f"{name}.pct", row))
        for name in WEIGHT_LAYERS:
            w = getattr(self.model, name).weight
            g = w.grad if w.grad is not None else torch.zeros_like(w)
            gn, wn = g.norm(), w.norm()
            named.append((f"{name}.grad", torch.stack([gn, lr * gn / (wn + 1e-12)])))

        sizes = [t.numel() for _, t in named]
        flat = torch.cat([t.reshape(-1).float() for _, t in named])
        return [n for n, _ in named], sizes, flat


def probed(model, activation, lr, step, *args):
    """``step(*args)`` (a training step on ``model``) with a probe attached: (loss, correct, scalars, vectors)."""
    with Probe(model, activation) as probe:
        loss, correct = step(*args)
    return loss, correct, *probe.read(lr)  # the one sync a probe needs


def look(model, activation, lr, X, y):
    """(scalars, vectors) of a probe of ``model`` as it is, on (X, y), leaving it as it was: a training-mode
    forward and backward pass with no update, its buffers (BN's running statistics) and gradients put back.

    What a switch of BN shows at once, on a paused or finished run too, without taking a training step.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    was_training = model.training
    try:
        for p, saved in grads:
            if saved is not None:
                p.grad.zero_()  # the probe reads this pass's gradient alone
        with Probe(model, activation) as probe:
            model.train()
            logits = model(X)
            (nn.functional.cross_entropy(logits, y)).backward()
            result = probe.read(lr)
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
            for p, saved in grads:
                if saved is None:
                    p.grad = None
                else:
                    p.grad.copy_(saved)  # in place: a captured CUDA graph keeps reading the same tensor
        model.train(was_training)
    return result


def unpack(names, sizes, flat):
    """(scalars, vectors) from ``Probe.gather``'s names, sizes and flat array (on the CPU, as numpy)."""
    parts = dict(zip(names, np.split(flat, np.cumsum(sizes)[:-1])))
    scalars, vectors = {}, {}
    for name, a in parts.items():
        if name.endswith(".pct"):
            base = name[:-4]
            for p, v in zip(PERCENTILES, a):
                scalars[f"{base}.p{round(p * 100)}"] = float(v)
        elif name.endswith(".mean_std"):
            scalars[f"{name[:-9]}.mean"], scalars[f"{name[:-9]}.std"] = float(a[0]), float(a[1])
        elif name.endswith(".saturated"):
            scalars[name] = float(a[0])
        elif name.endswith(".grad"):
            scalars[f"{name[:-5]}.grad_norm"], scalars[f"{name[:-5]}.update_ratio"] = float(a[0]), float(a[1])
        else:
            vectors[name] = a
    return scalars, vectors
