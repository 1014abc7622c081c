"""Our synchronised BN against our plain BN on the whole batch in one process (float64 and float32), in a group of
1, 2 and 4 gloo processes; against torch's nn.SyncBatchNorm where a CUDA GPU runs it (its kernels are CUDA's)."""

import copy

import pytest
import torch
from torch import nn

from bnviz.devices.process_group import run_local_group
from bnviz.devices.sync_batchnorm import SyncBatchNorm, group_size
from bnviz.norms.batchnorm import BatchNorm
from bnviz.step.models import build_lenet

SHAPES = {2: (10, 5), 4: (10, 3, 4, 4)}  # 10 images: slices of 5, 5 on 2 ranks; 3, 3, 2, 2 on 4 (unequal)
STEPS = 3


def batch(num_dims, step, dtype):
    """The whole minibatch and the gradient that flows into the layer's output, the same on every rank."""
    g = torch.Generator().manual_seed(100 * num_dims + step)
    X = torch.randn(SHAPES[num_dims], generator=g, dtype=torch.float64) * 3 + 2
    dY = torch.randn(SHAPES[num_dims], generator=g, dtype=torch.float64)
    return X.to(dtype), dY.to(dtype)


def layer(cls, num_dims, dtype):
    """A layer with gamma and beta away from 1 and 0, the same for every class and rank."""
    C = SHAPES[num_dims][1]
    m = cls(C, num_dims).to(dtype)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        m.gamma.copy_(torch.rand(m.gamma.shape, generator=g, dtype=torch.float64) + 0.5)
        m.beta.copy_(torch.randn(m.beta.shape, generator=g, dtype=torch.float64))
    return m


def run_steps(bn, num_dims, dtype, rank=0, world_size=1):
    """STEPS training steps of ``bn`` on this rank's slice of each batch, then one eval pass; what came out."""
    out = []
    for step in range(STEPS):
        X, dY = (t.tensor_split(world_size)[rank] for t in batch(num_dims, step, dtype))
        X.requires_grad_()
        bn.zero_grad()
        Y = bn(X)
        Y.backward(dY)
        out.append(dict(Y=Y.detach(), dX=X.grad, dgamma=bn.gamma.grad.clone(), dbeta=bn.beta.grad.clone()))
    bn.eval()
    X, _ = batch(num_dims, STEPS, dtype)
    return dict(steps=out, mean=bn.moving_mean.clone(), var=bn.moving_var.clone(), eval=bn(X).detach())


def _sync_rank(rank, world_size, report):
    """On each rank: our SyncBatchNorm, in float64 and float32, on 2-D and 4-D input."""
    assert group_size() == world_size
    out = {}
    for dtype in (torch.float64, torch.float32):
        for num_dims in SHAPES:
            out[dtype, num_dims] = run_steps(layer(SyncBatchNorm, num_dims, dtype), num_dims, dtype, rank, world_size)
    return out


def whole_batch(num_dims, dtype):
    """The reference: our plain BN on the whole batch, in one process."""
    return run_steps(layer(BatchNorm, num_dims, dtype), num_dims, dtype)


EPS32 = torch.finfo(torch.float32).eps


def close_enough(got, exact, float32_run, what):
    """float64: within 1e-12 of the whole batch's float64 run (the error measured is ~1e-15 at these scales).

    float32: the ranks sum in other orders than one process, so their bits differ from the whole batch's float32
    run, by how much depending on the CPU's kernels. So both are compared with the float64 run: the ranks may stray
    from it at most 4x as far as the whole batch's own float32 run does (measured: no further than 1x), and never
    less than 4 float32 epsilons of the values' scale (a rounding or two of the largest value)."""
    if float32_run is None:
        torch.testing.assert_close(got, exact, atol=1e-12, rtol=1e-12, msg=what)
        return
    error = (got.double() - exact).abs().max().item()
    own = (float32_run.double() - exact).abs().max().item()
    allowed = 4 * max(own, 4 * EPS32 * exact.abs().max().item())
    assert error <= allowed, f"{what}: the ranks stray {error:.2e} from float64, one process {own:.2e}"


def check_ranks(ranks, num_dims, dtype):
    """Each rank's outputs and input gradients are its slice of the whole batch's; gamma's and beta's summed over
    the ranks are the whole batch's (DDP averages them: the same step with a mean loss); the moving statistics and
    evaluation outputs are the whole batch's on every rank."""
    exact = whole_batch(num_dims, torch.float64)
    own = whole_batch(num_dims, dtype) if dtype == torch.float32 else None
    for step, expected in enumerate(exact["steps"]):
        got = [r[dtype, num_dims]["steps"][step] for r in ranks]
        joined = dict(
            Y=torch.cat([g["Y"] for g in got]),
            dX=torch.cat([g["dX"] for g in got]),
            dgamma=sum(g["dgamma"] for g in got),
            dbeta=sum(g["dbeta"] for g in got),
        )
        for key, value in joined.items():
            close_enough(value, expected[key], own and own["steps"][step][key], f"step {step} {key}")
    for r in ranks:
        for key in ("mean", "var", "eval"):
            close_enough(r[dtype, num_dims][key], exact[key], own and own[key], key)


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_group_normalises_as_one_batch(world_size, one_thread):
    ranks = run_local_group(_sync_rank, world_size, timeout_s=60, heartbeat_s=20)
    for dtype in (torch.float64, torch.float32):
        for num_dims in SHAPES:
            check_ranks(ranks, num_dims, dtype)


def test_without_a_group_it_is_batchnorm(one_thread):
    """No torch.distributed group at all: exactly BatchNorm (the same code path, the same bits)."""
    assert group_size() == 1
    for num_dims in SHAPES:
        ours = run_steps(layer(SyncBatchNorm, num_dims, torch.float32), num_dims, torch.float32)
        ref = whole_batch(num_dims, torch.float32)
        for a, b in zip(ours["steps"], ref["steps"]):
            for key in a:
                assert torch.equal(a[key], b[key]), key
        for key in ("mean", "var", "eval"):
            assert torch.equal(ours[key], ref[key])


def test_convert_keeps_the_state_and_only_plain_batchnorm():
    model = build_lenet("scratch", seed=3)
    with torch.no_grad():
        model.bn2.moving_mean.fill_(0.25)
        model.bn3.gamma.fill_(1.5)
    before = copy.deepcopy(model.state_dict())
    SyncBatchNorm.convert(model)
    assert all(type(model.get_submodule(n)) is SyncBatchNorm for n in ("bn1", "bn2", "bn3", "bn4"))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    ghost = SyncBatchNorm.convert(build_lenet("ghost"))  # a variant of BN is not plain BN: left as it is
    assert not any(isinstance(m, SyncBatchNorm) for m in ghost.modules())


# ------------------------------------------------------------------- torch's nn.SyncBatchNorm (a CUDA GPU only)


def _torch_sync_rank(rank, world_size, report):
    """On each rank, both layers on the GPU: ours and torch's nn.SyncBatchNorm on the same slices (gloo carries
    CUDA tensors, so both ranks can share one GPU)."""
    out = {}
    for num_dims in SHAPES:
        ours = layer(SyncBatchNorm, num_dims, torch.float64).cuda()
        C = SHAPES[num_dims][1]
        ref = nn.SyncBatchNorm(C).double().cuda()
        with torch.no_grad():
            ref.weight.copy_(ours.gamma.flatten())
            ref.bias.copy_(ours.beta.flatten())
        for step in range(STEPS):
            X, dY = (t.tensor_split(world_size)[rank].cuda() for t in batch(num_dims, step, torch.float64))
            X1, X2 = X.clone().requires_grad_(), X.clone().requires_grad_()
            ours.zero_grad()
            ref.zero_grad()
            Y1, Y2 = ours(X1), ref(X2)
            Y1.backward(dY)
            Y2.backward(dY)
            out[num_dims, step] = [
                (a.cpu(), b.cpu())
                for a, b in (
                    (Y1, Y2),
                    (X1.grad, X2.grad),
                    (ours.gamma.grad.flatten(), ref.weight.grad),
                    (ours.beta.grad.flatten(), ref.bias.grad),
                    (ours.moving_mean.flatten(), ref.running_mean),
                    (ours.moving_var.flatten(), ref.running_var),
                )
            ]
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("world_size", [2, 4])
def test_against_torch_sync_batchnorm_on_a_gpu(world_size):
    if not torch.cuda.is_available():
        pytest.skip("torch's nn.SyncBatchNorm runs on a CUDA GPU only; there is none here")
    ranks = run_local_group(_torch_sync_rank, world_size, timeout_s=120, heartbeat_s=30)
    for r in ranks:
        for pairs in r.values():
            for ours, theirs in pairs:
                torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-10)
