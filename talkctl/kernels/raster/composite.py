"""Front-to-back alpha compositing over tile-binned Gaussians, with a hand-written backward.

For a pixel p and its depth-sorted list i = 1..n:
    sigma_i = ½(a dx² + c dy²) + b dx dy,   d = p - mean_i
    alpha_i = min(0.999, o_i exp(-sigma_i)), set to 0 when below 1/255
    T_i     = Π_{j<i} (1 - alpha_j)
    Gaussian i is used only while T_i (1 - alpha_i) > 1e-4 (early termination, a prefix)
    out     = Σ_used alpha_i T_i f_i,   alpha_out = Σ_used alpha_i T_i = 1 - T_final
f_i holds the colour and the camera depth, so depth is composited in the same pass.

Backward, with g the output gradient at p and S_i = Σ_{k>i, used} alpha_k T_k (g·f_k):
    dL/dalpha_i = T_i (g·f_i) - S_i / (1 - alpha_i)     (alpha_out enters as a channel f = 1)
then through alpha = o exp(-sigma) to the opacity, the conic and the 2D mean.

How it is made fast on CPU (all of it plain torch, so it runs on CUDA too):
- Work is done on dense (units, pixels, list-segment) blocks; units with similar list
  lengths are batched together (see tiles.py).
- Lists are walked in segments of `SEGMENT` Gaussians; a unit whose pixels have all
  terminated (T <= 1e-4) is dropped from later segments, so opaque regions cost only
  the Gaussians in front. The backward walks the segments in reverse, carrying S_i.
- sigma for all pairs is one matmul of per-pair quadratic coefficients (in unit-local
  coordinates, so float32 keeps its precision) with a fixed polynomial basis of the
  pixel positions; the backward reduces over pixels with the same basis.
- Masks are `threshold`/`clamp` arithmetic rather than boolean ops, several times
  faster in torch on CPU; exp() arguments are clamped out of the denormal range.
- Forward keeps alpha and T (two floats per evaluated pair) for the backward; memory
  follows the Gaussian-unit overlaps, never N x H x W.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .projection import ALPHA_MAX, ALPHA_MIN, T_MIN
from .tiles import Binning

# alpha >= 1/255 is kept; `threshold` keeps x > thr, so use the float just below 1/255.
_ALPHA_KEEP = float(torch.nextafter(torch.tensor(ALPHA_MIN, dtype=torch.float64),
                                    torch.tensor(0.0, dtype=torch.float64)))
_NULL_LOGO = -1e4  # log-opacity of the padding Gaussian: exp(-1e4) = 0
_SIGMA_CAP = 30.0  # exp(-30) << 1/255; keeps exp() away from denormals (10-30x slower on x86)


def _basis(sub: int, dtype, device) -> Tensor:
    """(S, 6) polynomial basis [1, x, y, x², xy, y²] of the pixel centres of a unit,
    in coordinates relative to the unit's centre."""
    k = torch.arange(sub * sub, device=device)
    x = (k % sub).to(dtype) + 0.5 - sub / 2
    y = torch.div(k, sub, rounding_mode="floor").to(dtype) + 0.5 - sub / 2
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], dim=1)


class _Pairs:
    """A chunk's Gaussian parameters, gathered per (unit, list slot), in unit-local coordinates."""

    def __init__(self, b: Binning, units: Tensor, L: int, packed: Tensor):
        U = units.shape[0]
        ar = torch.arange(L, device=units.device)
        idx = b.offsets[units][:, None] + ar
        idx = torch.where(ar < b.counts[units][:, None], idx, b.n_pairs)  # pad -> null entry
        self.g = b.gids.index_select(0, idx.reshape(-1)).reshape(U, L)
        p = packed.index_select(0, self.g.reshape(-1)).reshape(U, L, -1)
        s = b.sub
        ucx = (units % b.Uw).to(p.dtype) * s + s / 2
        ucy = (torch.div(units, b.Uw, rounding_mode="floor") % b.Uh).to(p.dtype) * s + s / 2
        mx = p[..., 0] - ucx[:, None]
        my = p[..., 1] - ucy[:, None]
        a, bb, c, logo = p[..., 2], p[..., 3], p[..., 4], p[..., 5]
        # geo (U, 6, L): a, b, c, mx, my, 1/o  (what the backward needs)
        self.geo = torch.stack([a, bb, c, mx, my, torch.exp(-logo)], dim=1)
        amx_bmy = a * mx + bb * my
        bmx_cmy = bb * mx + c * my
        q0 = 0.5 * (mx * amx_bmy + my * bmx_cmy) - logo
        # quad (U, 6, L): sigma - log(o) = quad · [1, x, y, x², xy, y²]
        self.quad = torch.stack([q0, -amx_bmy, -bmx_cmy, 0.5 * a, bb, 0.5 * c], dim=1)
        self.Ft = p[..., 6:].transpose(1, 2).contiguous()  # (U, D + 1, L) features


def _rows(t: Tensor, active, l0: int, l1: int) -> Tensor:
    """t[active, ..., l0:l1] without a copy when every unit is active."""
    t = t[..., l0:l1]
    return t if active is None else t.index_select(0, active)


def _forward_segment(B, quad, Ft, T_prev):
    """One list segment for A units -> (A, D+1, S) contribution, alpha, Te, T after."""
    sigma = torch.matmul(B, quad)  # (A, S, Ls): sigma - log(o)
    alpha = torch.exp(sigma.clamp_(max=_SIGMA_CAP).neg_()).clamp_(max=ALPHA_MAX)
    alpha = F.threshold(alpha, _ALPHA_KEEP, 0.0, inplace=True)
    one_m = torch.rsub(alpha, 1.0)
    T_in = torch.cumprod(one_m, dim=-1)  # transmittance after each Gaussian
    if T_prev is not None:
        T_in.mul_(T_prev.unsqueeze(-1))
    T_end = T_in[..., -1].clone()
    # T before Gaussian i where it is used, 0 once compositing has stopped.
    Te = F.threshold(T_in, T_MIN, 0.0, inplace=True).div_(one_m)
    w = alpha * Te
    # (D+1, Ls) @ (Ls, S) per unit: the orientation MKL runs fast for small D.
    return torch.bmm(Ft, w.transpose(1, 2)), alpha, Te, T_end


def _backward_segment(B, geo, Ft, alpha, Te, gOt, tail):
    """Reverse step for one segment. tail (A, S) = Σ over later segments of w (g·f).

    Returns per-pair grads (A, Ls, D+1) features, (A, Ls, 6) [mx, my, a, b, c, o] and the
    segment's own Σ w (g·f) to add to the tail."""
    w = alpha * Te
    gf = torch.bmm(gOt.transpose(1, 2), Ft)  # (A, S, Ls): g · f_i at each pixel
    dFt = torch.bmm(gOt, w)  # (A, D + 1, Ls)
    csum = torch.cumsum(w.mul_(gf), dim=-1)
    seg_total = csum[..., -1].clone()
    suffix = torch.rsub(csum, (seg_total + tail).unsqueeze(-1))  # Σ_{k>i} w_k (g·f_k)
    one_m = torch.rsub(alpha, 1.0)
    dalpha = gf.mul_(Te).sub_(suffix.div_(one_m))
    # Clamped alphas (== 0.999) have no gradient; alpha == 0 gives none either.
    alpha_act = F.threshold(alpha.neg(), -ALPHA_MAX, 0.0, inplace=True).neg_()
    dsa = dalpha.mul_(alpha_act)  # dL/d raw * raw = -dL/dsigma
    m1, m_x, m_y, m_xx, m_xy, m_yy = torch.matmul(B.t(), dsa).unbind(1)  # Σ_p dsa·basis
    a, b, c, mx, my, inv_o = geo.unbind(1)
    ex = m_x - mx * m1  # Σ dsa dx
    ey = m_y - my * m1  # Σ dsa dy
    exx = m_xx - 2 * mx * m_x + mx * mx * m1  # Σ dsa dx²
    exy = m_xy - my * m_x - mx * m_y + mx * my * m1
    eyy = m_yy - 2 * my * m_y + my * my * m1
    dgeo = torch.stack([a * ex + b * ey, b * ex + c * ey, -0.5 * exx, -exy, -0.5 * eyy,
                        m1 * inv_o], dim=-1)
    return dFt.transpose(1, 2), dgeo, seg_total


def _packed(means2d, conics, opacities, feats):
    """(G + 1, 6 + D + 1) rows [mean x, y, conic a, b, c, log o, features, 1]; the last row
    is a null Gaussian (zero opacity) that pads short lists."""
    G = means2d.shape[0]
    logo = torch.log(opacities.clamp(min=1e-30))
    rows = torch.cat([means2d, conics, logo[:, None], feats, feats.new_ones(G, 1)], dim=1)
    null = rows.new_zeros(1, rows.shape[1])
    null[0, 5] = _NULL_LOGO
    return torch.cat([rows, null])


def _units_to_image(x: Tensor, b: Binning) -> Tensor:
    """(n_units, D, S) -> (C, H, W, D)."""
    s, D = b.sub, x.shape[1]
    img = x.reshape(b.C, b.Uh, b.Uw, D, s, s).permute(0, 1, 4, 2, 5, 3)
    return img.reshape(b.C, b.Uh * s, b.Uw * s, D)[:, : b.H, : b.W]


def _image_to_units(img: Tensor, b: Binning) -> Tensor:
    """(C, H, W, D) -> (n_units, D, S), zero padded."""
    s, D = b.sub, img.shape[-1]
    pad = img.new_zeros(b.C, b.Uh * s, b.Uw * s, D)
    pad[:, : b.H, : b.W] = img
    return pad.reshape(b.C, b.Uh, s, b.Uw, s, D).permute(0, 1, 3, 5, 2, 4).reshape(-1, D, s * s)


def _forward_chunk(b: Binning, units: Tensor, L: int, packed: Tensor, B: Tensor):
    pairs = _Pairs(b, units, L, packed)
    U, S = units.shape[0], B.shape[0]
    out = packed.new_zeros(U, pairs.Ft.shape[1], S)
    T = None
    active = None  # None = all units of the chunk
    segments = []
    for l0 in range(0, L, b.segment):
        l1 = min(L, l0 + b.segment)
        if T is not None:
            alive = torch.nonzero(T.amax(-1) > T_MIN).squeeze(1)
            if alive.numel() == 0:
                break
            if alive.numel() < T.shape[0]:
                active = alive if active is None else active.index_select(0, alive)
                T = T.index_select(0, alive)
        contrib, alpha, Te, T = _forward_segment(B, _rows(pairs.quad, active, l0, l1),
                                                 _rows(pairs.Ft, active, l0, l1), T)
        if active is None:
            out.add_(contrib)
        else:
            out.index_add_(0, active, contrib)
        segments.append((active, l0, l1, alpha, Te))
    return out, (pairs, segments)


def _backward_chunk(saved, B: Tensor, gOt: Tensor, g_geo: Tensor, g_feat: Tensor):
    pairs, segments = saved
    tail = gOt.new_zeros(gOt.shape[0], gOt.shape[2])
    for active, l0, l1, alpha, Te in reversed(segments):
        gOt_a = gOt if active is None else gOt.index_select(0, active)
        tail_a = tail if active is None else tail.index_select(0, active)
        dF, dgeo, seg_total = _backward_segment(
            B, _rows(pairs.geo, active, l0, l1), _rows(pairs.Ft, active, l0, l1),
            alpha, Te, gOt_a, tail_a)
        if active is None:
            tail.add_(seg_total)
        else:
            tail.index_add_(0, active, seg_total)
        g = _rows(pairs.g, active, l0, l1).reshape(-1)
        g_feat.index_add_(0, g, dF.reshape(-1, dF.shape[-1]))
        g_geo.index_add_(0, g, dgeo.reshape(-1, 6))


class CompositeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, binning: Binning):
        b = binning
        packed = _packed(means2d, conics, opacities, feats)
        B = _basis(b.sub, means2d.dtype, means2d.device)
        units_out = means2d.new_zeros(b.n_units, feats.shape[1] + 1, b.sub * b.sub)
        saved = []
        for units, L in b.chunks:
            out, state = _forward_chunk(b, units, L, packed, B)
            units_out.index_copy_(0, units, out)
            saved.append(state)
        img = _units_to_image(units_out, b)
        ctx.binning, ctx.saved_chunks = b, saved
        ctx.G, ctx.D = means2d.shape[0], feats.shape[1]
        return img[..., :-1].contiguous(), img[..., -1:].contiguous()

    @staticmethod
    def backward(ctx, g_out, g_alpha):
        b, G, D = ctx.binning, ctx.G, ctx.D
        dev, dt = g_out.device, g_out.dtype
        B = _basis(b.sub, dt, dev)
        gOt_units = _image_to_units(torch.cat([g_out, g_alpha], dim=-1), b)
        g_geo = torch.zeros(G + 1, 6, device=dev, dtype=dt)
        g_feat = torch.zeros(G + 1, D + 1, device=dev, dtype=dt)
        for (units, _L), saved in zip(b.chunks, ctx.saved_chunks):
            _backward_chunk(saved, B, gOt_units.index_select(0, units), g_geo, g_feat)
        g_geo, g_feat = g_geo[:G], g_feat[:G, :-1]
        return g_geo[:, 0:2], g_geo[:, 2:5], g_geo[:, 5], g_feat, None


def composite(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, binning: Binning):
    """Flat (G, ·) Gaussians (G = C*N, id c*N + n) -> (C, H, W, D) features, (C, H, W, 1) alpha."""
    return CompositeFunction.apply(means2d, conics, opacities, feats, binning)
