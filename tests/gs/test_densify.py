"""Adaptive density control: optimizer state stays row-for-row with the Gaussians."""
import math
from types import SimpleNamespace

import torch

from talkctl.gs.densify import (DensifyConfig, DensifyStrategy, append_rows, gaussian_param_groups,
                                    keep_rows)
from talkctl.gs.gaussians import GaussianModel

LRS = {"means": 1e-3, "quats": 1e-3, "log_scales": 1e-3, "opacity_logits": 1e-2, "sh_dc": 1e-3, "sh_rest": 1e-4}


def _setup(n=20, degree=1):
    g = torch.Generator().manual_seed(0)
    m = GaussianModel.random(n, (-1, -1, -1), (1, 1, 1), sh_degree=degree, generator=g)
    opt = torch.optim.Adam(gaussian_param_groups(m, LRS), eps=1e-15)
    loss = sum((p * torch.arange(1, p.numel() + 1, dtype=torch.float32).reshape(p.shape)).sum() ** 2 * 1e-6
               for p in m.params.values())
    loss.backward()
    opt.step()
    opt.zero_grad()
    return m, opt


def _check_consistent(m, opt):
    for group in opt.param_groups:
        (p,) = group["params"]
        assert p is m.params[group["name"]], "optimizer holds a stale tensor"
        st = opt.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
    assert len(opt.state) == len(m.params)


def test_keep_rows_moves_state_with_kept_gaussians():
    m, opt = _setup()
    before = {k: opt.state[p]["exp_avg"].clone() for k, p in m.params.items()}
    means = m.params["means"].detach().clone()
    keep = torch.ones(20, dtype=torch.bool)
    keep[[3, 7, 11]] = False
    keep_rows(m, opt, keep)
    assert m.num == 17
    _check_consistent(m, opt)
    assert torch.equal(m.params["means"], means[keep])
    for k, p in m.params.items():
        assert torch.equal(opt.state[p]["exp_avg"], before[k][keep]), k  # the pruned rows' state is gone


def test_append_rows_starts_new_gaussians_with_zero_moments():
    m, opt = _setup()
    new = {k: p.detach()[:4].clone() for k, p in m.params.items()}
    append_rows(m, opt, new)
    assert m.num == 24
    _check_consistent(m, opt)
    st = opt.state[m.params["means"]]
    assert torch.all(st["exp_avg"][20:] == 0) and torch.all(st["exp_avg_sq"][20:] == 0)
    assert torch.any(st["exp_avg"][:20] != 0)
    # Adam still steps on the grown tensors
    m.params["means"].sum().backward()
    opt.step()


def test_densify_clones_splits_and_prunes():
    m, opt = _setup(n=6)
    with torch.no_grad():
        m.params["log_scales"][:3] = math.log(0.001)  # small -> clone
        m.params["log_scales"][3:] = math.log(0.2)    # large -> split
        m.params["opacity_logits"][5] = -10           # transparent -> pruned
    strat = DensifyStrategy(DensifyConfig(start=0, every=1, grad_threshold=0.1, percent_dense=0.01, extent=1.0))
    # gradient statistics: Gaussians 0 and 3 over the threshold
    strat._ensure(6, "cpu")
    strat.grad_accum[:] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    strat.count[:] = 1
    info = strat.densify_and_prune(1, m, opt, 64)
    assert info["cloned"] == 1 and info["split"] == 1
    assert info["pruned"] == 2  # the split original and the transparent one
    assert m.num == 6 + 1 + 2 - 2
    _check_consistent(m, opt)
    # split children are smaller than their parent (scale / 1.6)
    assert torch.allclose(m.scales[-2:], torch.full((2, 3), 0.2 / 1.6), atol=1e-6)
    assert strat.grad_accum.shape == (m.num,) and float(strat.grad_accum.sum()) == 0


def test_max_gaussians_caps_growth():
    m, opt = _setup(n=10)
    strat = DensifyStrategy(DensifyConfig(start=0, every=1, grad_threshold=0.1, max_gaussians=12, min_opacity=0.0))
    strat._ensure(10, "cpu")
    strat.grad_accum[:] = torch.linspace(1, 2, 10)
    strat.count[:] = 1
    with torch.no_grad():
        m.params["log_scales"][:] = math.log(0.001)
    strat.densify_and_prune(1, m, opt, 64)
    assert m.num == 12
    _check_consistent(m, opt)


def test_post_backward_accumulates_screen_gradients_and_resets_opacity():
    m, opt = _setup(n=5)
    strat = DensifyStrategy(DensifyConfig(start=100, every=100, reset_every=2))
    means2d = torch.zeros(2, 5, 2, requires_grad=True)
    (means2d * torch.tensor([1.0, 0.0])).sum().backward()
    out = SimpleNamespace(means2d=means2d, radii=torch.tensor([[1, 1, 0, 1, 1], [1, 0, 0, 1, 1]], dtype=torch.int32))
    strat.post_backward(1, m, opt, out, 64, 64)
    # pixel grad * W/2 * C (2 views) per visible view
    assert torch.allclose(strat.grad_accum, torch.tensor([128.0, 64, 0, 128, 128]))
    assert torch.equal(strat.count, torch.tensor([2.0, 1, 0, 2, 2]))
    with torch.no_grad():
        m.params["opacity_logits"][:] = 3.0
    info = strat.post_backward(2, m, opt, out, 64, 64)
    assert info.get("reset") and bool((m.opacities <= 0.0101).all())
    assert torch.all(opt.state[m.params["opacity_logits"]]["exp_avg"] == 0)


def test_screen_gradient_does_not_depend_on_the_batch_size():
    """A step that averages its loss over C views gives each view 1/C of its gradient: the
    accumulated mean (what the threshold sees) equals that of the views trained one at a time."""
    m, _ = _setup(n=3)
    per_view = torch.tensor([[[0.3, -0.1], [0.0, 0.2], [0.05, 0.05]],
                             [[0.1, 0.1], [0.2, 0.0], [-0.4, 0.3]]])  # dL/dmeans2d of each view alone
    radii = torch.ones(2, 3, dtype=torch.int32)

    def accumulate(views: list[int]) -> DensifyStrategy:
        strat = DensifyStrategy(DensifyConfig(start=100))
        means2d = torch.zeros(len(views), 3, 2, requires_grad=True)
        (means2d * per_view[views]).sum().div(len(views)).backward()  # the batch-mean loss
        strat._accumulate(m, SimpleNamespace(means2d=means2d, radii=radii[views]), 64, 48)
        return strat

    batched = accumulate([0, 1])
    alone = [accumulate([0]), accumulate([1])]
    torch.testing.assert_close(batched.grad_accum, alone[0].grad_accum + alone[1].grad_accum)
    torch.testing.assert_close(batched.count, alone[0].count + alone[1].count)

