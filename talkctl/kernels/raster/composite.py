"""Front-to-back alpha compositing over tile-binned Gaussians, with a hand-written backward.

For a pixel p and its depth-sorted list i = 1..n:
    sigma_i = ½(a dx² + c dy²) + b dx dy,   d = p - mean_i
    alpha_i = min(0.999, o_i exp(-sigma_i)), set to 0 when below 1/255
    T_i     = Π_{j<i} (1 - alpha_j)
    Gaussian i is used only while T_i (1 - alpha_i) > 1e-4 (early termination, a prefix)
    out     = Σ_used alpha_i T_i f_i,   alpha_out = Σ_used alpha_i T_i = 1 - T_final
f_i holds the colour and the camera depth, so depth is composited in the same pass.

Speed notes (CPU): work is done on dense (units, pixels, list) blocks. sigma for all
pairs is one matmul of per-pair quadratic coefficients (in unit-local coordinates,
so float32 keeps its precision) with a fixed polynomial basis of the pixel
positions; the backward reduces over pixels with the same basis. Masks are applied
with `threshold`/`clamp` arithmetic rather than boolean indexing, which is several
times slower in torch on CPU. Forward keeps alpha and T (two floats per pair) for
the backward, never an (N, H, W) tensor.

Backward, with g the output gradient at p and S_i = Σ_{k>i, used} alpha_k T_k (g·f_k):
    dL/dalpha_i = T_i (g·f_i) - S_i / (1 - alpha_i)     (alpha_out enters as a channel f = 1)
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


def _basis(sub: int, dtype, device) -> Tensor:
    """(S, 6) polynomial basis [1, x, y, x², xy, y²] of the pixel centres of a unit,
    in coordinates relative to the unit's centre."""
    k = torch.arange(sub * sub, device=device)
    x = (k % sub).to(dtype) + 0.5 - sub / 2
    y = torch.div(k, sub, rounding_mode="floor").to(dtype) + 0.5 - sub / 2
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], dim=1)


class _Pairs:
    """Per-chunk gathered Gaussian parameters in unit-local coordinates, (U, L) each."""

    def __init__(self, b: Binning, units: Tensor, L: int, m_ext, con_ext, logo_ext):
        ar = torch.arange(L, device=units.device)
        cnt = b.counts[units]
        idx = b.offsets[units][:, None] + ar
        idx = torch.where(ar < cnt[:, None], idx, b.n_pairs)  # past the end -> the null entry
        self.g = b.gids[idx]
        s = b.sub
        ucx = (units % b.Uw).to(m_ext.dtype) * s + s / 2
        ucy = (torch.div(units, b.Uw, rounding_mode="floor") % b.Uh).to(m_ext.dtype) * s + s / 2
        m = m_ext[self.g]
        self.mx = m[..., 0] - ucx[:, None]
        self.my = m[..., 1] - ucy[:, None]
        self.a, self.b, self.c = con_ext[self.g].unbind(-1)
        self.logo = logo_ext[self.g]

    def quad(self) -> Tensor:
        """(U, 6, L) coefficients q with sigma - log(o) = q · basis(pixel)."""
        a, b, c, mx, my = self.a, self.b, self.c, self.mx, self.my
        amx_bmy = a * mx + b * my
        bmx_cmy = b * mx + c * my
        q0 = 0.5 * (mx * amx_bmy + my * bmx_cmy) - self.logo
        return torch.stack([q0, -amx_bmy, -bmx_cmy, 0.5 * a, b, 0.5 * c], dim=1)


def _forward_chunk(pairs: _Pairs, B: Tensor, F_ext: Tensor):
    sigma = torch.matmul(B, pairs.quad())  # (U, S, L), includes -log(o)
    alpha = torch.exp(sigma.neg_()).clamp_(max=ALPHA_MAX)  # o * exp(-sigma), clamped
    alpha = F.threshold(alpha, _ALPHA_KEEP, 0.0, inplace=True)
    one_m = torch.rsub(alpha, 1.0)
    T_in = torch.cumprod(one_m, dim=-1)  # transmittance after each Gaussian
    # T before Gaussian i where it is used, 0 where compositing has stopped.
    Te = F.threshold(T_in, T_MIN, 0.0, inplace=True).div_(one_m)
    w = alpha * Te
    out = torch.bmm(w, F_ext[pairs.g])  # (U, S, D + 1)
    return out, alpha, Te


def _backward_chunk(pairs: _Pairs, B: Tensor, F_ext: Tensor, alpha: Tensor, Te: Tensor, gO: Tensor):
    """gO (U, S, D + 1) -> per-pair grads: (U, L, D + 1) features, (U, L, 6) [mx, my, a, b, c, o]."""
    Fg = F_ext[pairs.g]  # (U, L, D + 1)
    w = alpha * Te
    gf = torch.bmm(gO, Fg.transpose(1, 2))  # (U, S, L): g · f_i at each pixel
    dF = torch.bmm(w.transpose(1, 2), gO)  # (U, L, D + 1)
    wgf = w.mul_(gf)
    csum = torch.cumsum(wgf, dim=-1)
    suffix = csum[..., -1:] - csum  # Σ_{k>i} w_k (g·f_k)
    one_m = torch.rsub(alpha, 1.0)
    dalpha = gf.mul_(Te).sub_(suffix.div_(one_m))
    # Clamped alphas (== 0.999) have no gradient; alpha == 0 gives none either.
    alpha_act = F.threshold(alpha.neg(), -ALPHA_MAX, 0.0, inplace=True).neg_()
    dsa = dalpha.mul_(alpha_act)  # dL/d raw * raw = -dL/dsigma
    mom = torch.matmul(B.t(), dsa)  # (U, 6, L): Σ_p dsa [1, x, y, x², xy, y²]
    m1, mxx_, myy_, mx2, mxy, my2 = mom.unbind(1)
    a, b, c, mx, my = pairs.a, pairs.b, pairs.c, pairs.mx, pairs.my
    ex = mxx_ - mx * m1  # Σ dsa dx
    ey = myy_ - my * m1  # Σ dsa dy
    exx = mx2 - 2 * mx * mxx_ + mx * mx * m1  # Σ dsa dx²
    exy = mxy - my * mxx_ - mx * myy_ + mx * my * m1
    eyy = my2 - 2 * my * myy_ + my * my * m1
    g_mx = a * ex + b * ey
    g_my = b * ex + c * ey
    g_a, g_b, g_c = -0.5 * exx, -exy, -0.5 * eyy
    g_o = m1 * torch.exp(-pairs.logo)
    return dF, torch.stack([g_mx, g_my, g_a, g_b, g_c, g_o], dim=-1)


def _extended(means2d, conics, opacities, feats):
    """Flat per-Gaussian tensors with one extra null row (index G) used for padding."""
    G, dev, dt = means2d.shape[0], means2d.device, means2d.dtype
    m_ext = torch.cat([means2d, means2d.new_zeros(1, 2)])
    con_ext = torch.cat([conics, conics.new_zeros(1, 3)])
    logo = torch.log(opacities.clamp(min=1e-30))
    logo_ext = torch.cat([logo, torch.full((1,), _NULL_LOGO, device=dev, dtype=dt)])
    F_ext = torch.cat([feats, torch.ones(G, 1, device=dev, dtype=dt)], dim=1)
    F_ext = torch.cat([F_ext, F_ext.new_zeros(1, F_ext.shape[1])])
    return m_ext, con_ext, logo_ext, F_ext


def _units_to_image(x: Tensor, b: Binning) -> Tensor:
    """(n_units, S, D) -> (C, H, W, D)."""
    s, D = b.sub, x.shape[-1]
    img = x.reshape(b.C, b.Uh, b.Uw, s, s, D).permute(0, 1, 3, 2, 4, 5)
    return img.reshape(b.C, b.Uh * s, b.Uw * s, D)[:, : b.H, : b.W]


def _image_to_units(img: Tensor, b: Binning) -> Tensor:
    """(C, H, W, D) -> (n_units, S, D), zero padded."""
    s, D = b.sub, img.shape[-1]
    pad = img.new_zeros(b.C, b.Uh * s, b.Uw * s, D)
    pad[:, : b.H, : b.W] = img
    return pad.reshape(b.C, b.Uh, s, b.Uw, s, D).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, D)


class CompositeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, feats, binning: Binning):
        b = binning
        m_ext, con_ext, logo_ext, F_ext = _extended(means2d, conics, opacities, feats)
        B = _basis(b.sub, means2d.dtype, means2d.device)
        D1 = F_ext.shape[1]
        units_out = means2d.new_zeros(b.n_units, b.sub * b.sub, D1)
        saved = []
        for units, L in b.chunks:
            pairs = _Pairs(b, units, L, m_ext, con_ext, logo_ext)
            out, alpha, Te = _forward_chunk(pairs, B, F_ext)
            units_out.index_copy_(0, units, out)
            saved.append((alpha, Te))
        img = _units_to_image(units_out, b)
        ctx.binning, ctx.saved_chunks = b, saved
        ctx.save_for_backward(means2d, conics, opacities, feats)
        return img[..., :-1].contiguous(), img[..., -1:].contiguous()

    @staticmethod
    def backward(ctx, g_out, g_alpha):
        means2d, conics, opacities, feats = ctx.saved_tensors
        b = ctx.binning
        m_ext, con_ext, logo_ext, F_ext = _extended(means2d, conics, opacities, feats)
        B = _basis(b.sub, means2d.dtype, means2d.device)
        gO_units = _image_to_units(torch.cat([g_out, g_alpha], dim=-1), b)
        G = means2d.shape[0]
        g_geo = means2d.new_zeros(G + 1, 6)
        g_feat = means2d.new_zeros(G + 1, F_ext.shape[1])
        for (units, L), (alpha, Te) in zip(b.chunks, ctx.saved_chunks):
            pairs = _Pairs(b, units, L, m_ext, con_ext, logo_ext)
            dF, dgeo = _backward_chunk(pairs, B, F_ext, alpha, Te, gO_units[units])
            flat = pairs.g.reshape(-1)
            g_feat.index_add_(0, flat, dF.reshape(-1, dF.shape[-1]))
            g_geo.index_add_(0, flat, dgeo.reshape(-1, 6))
        ctx.saved_chunks = None
        g_geo, g_feat = g_geo[:G], g_feat[:G, :-1]
        return g_geo[:, 0:2], g_geo[:, 2:5], g_geo[:, 5], g_feat, None


def composite(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, binning: Binning):
    """Flat (G, ·) Gaussians (G = C*N, id c*N + n) -> (C, H, W, D) features, (C, H, W, 1) alpha."""
    return CompositeFunction.apply(means2d, conics, opacities, feats, binning)
