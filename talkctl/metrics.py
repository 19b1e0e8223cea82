"""Quality and lip-sync figures for `talkctl eval`.

Image figures: PSNR (optionally inside a mask), SSIM (Gaussian window 11, sigma 1.5, the
Wang et al. definition, equal to skimage's structural_similarity with gaussian_weights=True,
use_sample_covariance=False), LPIPS (AlexNet, the `lpips` package's v0.1 network).
Motion figures: LMD (mouth landmark distance), mouth-opening correlation, and a lip-sync
figure that needs no downloaded model (mouth opening vs speech energy, best lag).
SyncNet (joonson/syncnet_python, syncnet_v2.model): confidence and offset when the weights
file is present.

Weights are looked up in `weights_dir()` = $TALKCTL_WEIGHTS or ~/.cache/talkctl/weights,
then in the usual library caches; when missing, the functions say which file is missing
(a reason string, or MissingToolError) and never invent a number.
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np

from talkctl.errors import MissingToolError

# ---------------------------------------------------------------------------- helpers


def weights_dir() -> Path:
    """Where talkctl looks for model weight files first."""
    env = os.environ.get("TALKCTL_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "talkctl" / "weights"


def _to_float(img) -> np.ndarray:
    """uint8 -> [0,1] float64; float input is taken as already in [0,1]."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


# ---------------------------------------------------------------------------- PSNR / SSIM


def psnr(a, b, mask=None) -> float:
    """PSNR in dB between two images (H,W[,C]) (uint8, or float in [0,1]).

    mask (H,W), bool or weights in [0,1]: the error is averaged over masked pixels only.
    Identical images give +inf.
    """
    x, y = _to_float(a), _to_float(b)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    err = (x - y) ** 2
    if mask is not None:
        m = _to_float(mask) if np.asarray(mask).dtype != bool else np.asarray(mask, np.float64)
        if err.ndim == 3:
            m = m[..., None] * np.ones(err.shape[-1])
        if m.sum() == 0:
            return float("nan")
        mse = float((err * m).sum() / m.sum())
    else:
        mse = float(err.mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _gauss_window(size: int, sigma: float, torch, dtype):
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim_torch(x, y, data_range: float = 1.0, win: int = 11, sigma: float = 1.5):
    """SSIM per image for batches (B,C,H,W) of torch tensors; differentiable, returns (B,).

    'valid' filtering (no padding), i.e. the map is averaged over pixels whose whole
    window lies inside the image -- the same as skimage, which pads then crops win//2.
    """
    import torch
    import torch.nn.functional as F

    c = x.shape[1]
    g = _gauss_window(win, sigma, torch, x.dtype).to(x.device)
    gx = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)
    gy = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean(dim=(1, 2, 3))


def ssim(a, b) -> float:
    """SSIM of two images (H,W[,C]), uint8 or float in [0,1]; mean over channels (RGB)."""
    import torch

    x, y = _to_float(a), _to_float(b)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    if min(x.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {x.shape[:2]}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    ty = torch.from_numpy(np.ascontiguousarray(y.transpose(2, 0, 1)))[None]
    return float(ssim_torch(tx, ty)[0])


# ---------------------------------------------------------------------------- LPIPS

LPIPS_LIN_FILE = "alex.pth"  # lpips package: lpips/weights/v0.1/alex.pth
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet (torch hub checkpoints)


def _lpips_lin_candidates() -> list[Path]:
    c = [weights_dir() / "lpips" / "v0.1" / LPIPS_LIN_FILE, weights_dir() / "lpips_alex_v0.1.pth"]
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.origin:
        c.append(Path(spec.origin).parent / "weights" / "v0.1" / LPIPS_LIN_FILE)
    return c


def _alexnet_candidates() -> list[Path]:
    c = [weights_dir() / ALEXNET_FILE]
    try:
        import torch

        c.append(Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE)
    except Exception:
        pass
    return c


def _first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def lpips_files() -> tuple[dict[str, Path], str | None]:
    """The two weight files LPIPS-alex needs, and a reason naming those that are missing."""
    found, missing = {}, []
    for key, cands in (("lin", _lpips_lin_candidates()), ("alexnet", _alexnet_candidates())):
        p = _first_existing(cands)
        if p is None:
            missing.append(" or ".join(str(x) for x in cands[:2] if x is not None))
        else:
            found[key] = p
    if missing:
        return found, ("LPIPS weights missing: " + "; ".join(missing)
                       + " (pip install lpips provides weights/v0.1/alex.pth; torchvision downloads "
                       + ALEXNET_FILE + " into the torch hub checkpoints folder)")
    return found, None


def _build_lpips_alex():
    """The LPIPS v0.1 'alex' network: torchvision AlexNet features at relu1..relu5,
    unit-normalised per channel, squared differences weighted by 1x1 linear layers,
    spatially averaged and summed (Zhang et al. 2018; same module names as lpips so its
    state dict loads)."""
    import torch
    from torch import nn

    class _NetLin(nn.Module):
        def __init__(self, chn):
            super().__init__()
            self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(chn, 1, 1, bias=False))

    class LpipsAlex(nn.Module):
        chns = (64, 192, 384, 256, 256)
        taps = (1, 4, 7, 9, 11)  # ReLU outputs in torchvision's alexnet.features

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
            )
            for i, c in enumerate(self.chns):
                setattr(self, f"lin{i}", _NetLin(c))
            self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

        def _feats(self, x):
            out, h = [], (x - self.shift) / self.scale
            for i, layer in enumerate(self.features):
                h = layer(h)
                if i in self.taps:
                    out.append(h / (torch.sqrt((h * h).sum(1, keepdim=True)) + 1e-10))
            return out

        def forward(self, x, y):
            """x, y (B,3,H,W) in [-1,1] -> (B,) distances."""
            total = 0
            for i, (fx, fy) in enumerate(zip(self._feats(x), self._feats(y))):
                total = total + getattr(self, f"lin{i}").model((fx - fy) ** 2).mean(dim=(2, 3))
            return total.view(-1)

    return LpipsAlex()


def load_lpips(device: str = "cpu"):
    """(model, None) when both weight files are present, else (None, reason)."""
    import torch

    files, reason = lpips_files()
    if reason:
        return None, reason
    net = _build_lpips_alex()
    try:
        alex = torch.load(files["alexnet"], map_location="cpu", weights_only=True)
        lin = torch.load(files["lin"], map_location="cpu", weights_only=True)
        feats = {k[len("features."):]: v for k, v in alex.items() if k.startswith("features.")}
        net.features.load_state_dict(feats, strict=True)
        lin = {k: v for k, v in lin.items() if k.startswith("lin")}
        missing = [k for k in net.state_dict() if k.startswith("lin") and k not in lin]
        if missing:
            raise KeyError(f"no {missing[0]}")
        net.load_state_dict(lin, strict=False)
    except Exception as exc:
        return None, f"LPIPS weights unreadable ({files['alexnet']}, {files['lin']}): {exc}"
    return net.eval().to(device), None


def lpips_distance(a, b, model=None, device: str = "cpu") -> tuple[float | None, str | None]:
    """LPIPS between two images (H,W,3) uint8 / float [0,1]: (value, None) or (None, reason)."""
    import torch

    if model is None:
        model, reason = load_lpips(device)
        if model is None:
            return None, reason
    dev = next(model.parameters()).device

    def prep(img):
        t = torch.from_numpy(_to_float(img).astype(np.float32).transpose(2, 0, 1))[None]
        return (t * 2 - 1).to(dev)

    with torch.no_grad():
        return float(model(prep(a), prep(b))[0]), None


class ImageFigures:
    """Per-frame PSNR / masked PSNR / SSIM / LPIPS over a sequence, streamed (one frame pair
    at a time); summary() gives the means. LPIPS is loaded once; when its weights are
    missing the summary holds lpips=None and lpips_reason."""

    def __init__(self, lpips: bool = True, device: str = "cpu"):
        self.lpips_model, self.lpips_reason = load_lpips(device) if lpips else (None, "not requested")
        self.per_frame: dict[str, list[float]] = {"psnr": [], "psnr_face": [], "ssim": [], "lpips": []}

    def add(self, real, rendered, mask=None) -> dict:
        row = {"psnr": psnr(real, rendered), "ssim": ssim(real, rendered)}
        if mask is not None:
            row["psnr_face"] = psnr(real, rendered, mask=mask)
        if self.lpips_model is not None:
            row["lpips"] = lpips_distance(real, rendered, model=self.lpips_model)[0]
        for k, v in row.items():
            self.per_frame[k].append(v)
        return row

    def summary(self) -> dict:
        out: dict = {"frames": len(self.per_frame["psnr"])}
        for k, v in self.per_frame.items():
            out[k] = float(np.mean(v)) if v else None
        if out["lpips"] is None:
            out["lpips_reason"] = self.lpips_reason
        return out


# ---------------------------------------------------------------------------- landmarks

# Mouth and outer eye corners for the landmark sets talkctl's backends produce.
# 68: iBUG/face-alignment (mouth 48-67; outer eye corners 36 and 45).
# 478/468: MediaPipe face mesh (FACEMESH_LIPS, 40 points; outer eye corners 33 and 263).
MEDIAPIPE_LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
                  267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
MOUTH_INDICES = {68: tuple(range(48, 68)), 468: MEDIAPIPE_LIPS, 478: MEDIAPIPE_LIPS}
EYE_CORNERS = {68: (36, 45), 468: (33, 263), 478: (33, 263)}


def lmd(pred, ref, mouth: tuple[int, ...] | None = None, normalise: str | None = "interocular") -> float:
    """Landmark distance on the mouth: mean over frames and mouth points of the 2D distance
    between pred (T,L,2|3) and ref (T,L,2|3) landmarks (x,y used).

    normalise: "interocular" divides each frame's distance by the ref frame's outer-eye-corner
    distance (scale-free: 0.01 = 1 % of the eye distance); "box" by the diagonal of the ref
    frame's landmark bounding box (any landmark set); None: pixels (what most papers report,
    on their own crop size).
    """
    p, r = np.asarray(pred, np.float64)[..., :2], np.asarray(ref, np.float64)[..., :2]
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(f"landmark arrays must both be (T,L,2|3), got {p.shape} and {r.shape}")
    n = p.shape[1]
    idx = mouth if mouth is not None else MOUTH_INDICES.get(n)
    if idx is None:
        raise ValueError(f"no mouth indices known for {n} landmarks; pass mouth=")
    d = np.linalg.norm(p[:, idx] - r[:, idx], axis=-1).mean(axis=1)
    if normalise == "interocular":
        if n not in EYE_CORNERS:
            raise ValueError(f"no eye corners known for {n} landmarks; use normalise='box'")
        i, j = EYE_CORNERS[n]
        scale = np.linalg.norm(r[:, i] - r[:, j], axis=-1)
    elif normalise == "box":
        scale = np.linalg.norm(r.max(axis=1) - r.min(axis=1), axis=-1)
    elif normalise is None:
        scale = np.ones(len(d))
    else:
        raise ValueError(f"normalise must be 'interocular', 'box' or None, not {normalise!r}")
    return float(np.mean(d / np.maximum(scale, 1e-9)))


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length series; nan when either is constant."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"series lengths differ: {x.size} vs {y.size}")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def mouth_open_correlation(real, rendered) -> float:
    """How well the rendered mouth opening follows the real one over time (Pearson)."""
    return pearson(real, rendered)


# ---------------------------------------------------------------------------- audio-mouth sync


def audio_energy_per_frame(wav, sample_rate: int = 16000, fps: int = 25, band: tuple[float, float] | None = (300.0, 3000.0),
                           n_frames: int | None = None) -> np.ndarray:
    """Speech energy in dB for each video frame: Hann-windowed power of the samples shown
    during frame i ([i, i+1) / fps), restricted to `band` Hz (300-3000 Hz: where voiced
    speech energy lives, so breath and rumble count less). (T,) float64."""
    w = np.asarray(wav, np.float64).ravel()
    hop = sample_rate / fps
    t = n_frames if n_frames is not None else int(round(len(w) / hop))
    n = int(round(hop))
    starts = np.round(np.arange(t) * hop).astype(int)
    w = np.pad(w, (0, max(0, starts[-1] + n - len(w)) if t else 0))
    frames = np.stack([w[s:s + n] for s in starts]) if t else np.zeros((0, n))
    spec = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2
    if band is not None:
        f = np.fft.rfftfreq(n, 1.0 / sample_rate)
        spec = spec[:, (f >= band[0]) & (f <= band[1])]
    return 10.0 * np.log10(spec.mean(axis=1) + 1e-10)


def lagged_correlation(mouth, energy, max_lag: int = 2) -> tuple[float, int]:
    """Best Pearson correlation of mouth[t + lag] with energy[t] over lag in [-max_lag, max_lag].

    Returns (corr, lag); lag > 0 means the mouth moves `lag` frames after the sound.
    (nan, 0) when the series are too short or constant.
    """
    m, e = np.asarray(mouth, np.float64).ravel(), np.asarray(energy, np.float64).ravel()
    n = min(len(m), len(e))
    m, e = m[:n], e[:n]
    best = (float("nan"), 0)
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = m[lag:], e[:n - lag]
        else:
            a, b = m[:n + lag], e[-lag:]
        if len(a) < 3:
            continue
        c = pearson(a, b)
        if not math.isnan(c) and (math.isnan(best[0]) or c > best[0]):
            best = (c, lag)
    return best


def audio_mouth_sync(mouth_open, wav, sample_rate: int = 16000, fps: int = 25, max_lag: int = 2) -> tuple[float, int]:
    """Lip-sync figure needing no downloaded model: correlation between a mouth-opening
    series (one value per video frame) and the band-limited speech energy of the audio,
    at the best lag within +-max_lag frames. Returns (corr, lag)."""
    energy = audio_energy_per_frame(wav, sample_rate, fps, n_frames=len(mouth_open))
    return lagged_correlation(mouth_open, energy, max_lag)


# ---------------------------------------------------------------------------- SyncNet

SYNCNET_FILE = "syncnet_v2.model"
SYNCNET_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"


def syncnet_path() -> Path:
    return weights_dir() / SYNCNET_FILE


def syncnet_status() -> str | None:
    """Why SyncNet cannot run here, or None."""
    p = syncnet_path()
    if not p.is_file():
        return f"SyncNet weights {p} missing: download {SYNCNET_URL} there (or set TALKCTL_WEIGHTS to its folder)"
    return None


def build_syncnet(fc_dim: int = 1024):
    """SyncNet as in joonson/syncnet_python (SyncNetModel.S): audio = 13 MFCC x 20 frames
    (0.2 s), video = 5 colour face crops 224x224 (BGR, 0-255), both to a 1024-d embedding.
    Module names match the released state dict (netcnnaud, netfcaud, netcnnlip, netfclip)."""
    from torch import nn

    def c2(i, o, k, s=1, p=1):
        return [nn.Conv2d(i, o, k, s, p), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    def c3(i, o, k, s=1, p=0):
        return [nn.Conv3d(i, o, k, s, p), nn.BatchNorm3d(o), nn.ReLU(inplace=True)]

    class SyncNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.netcnnaud = nn.Sequential(
                *c2(1, 64, 3), nn.MaxPool2d(1, 1),
                *c2(64, 192, 3), nn.MaxPool2d(3, (1, 2)),
                *c2(192, 384, 3), *c2(384, 256, 3), *c2(256, 256, 3), nn.MaxPool2d(3, 2),
                *c2(256, 512, (5, 4), p=0),
            )
            self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, fc_dim))
            self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, fc_dim))
            self.netcnnlip = nn.Sequential(
                *c3(3, 96, (5, 7, 7), (1, 2, 2)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
                *c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
                *c3(256, 256, (1, 3, 3), 1, (0, 1, 1)), *c3(256, 256, (1, 3, 3), 1, (0, 1, 1)),
                *c3(256, 256, (1, 3, 3), 1, (0, 1, 1)), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
                *c3(256, 512, (1, 6, 6)),
            )

        def forward_aud(self, x):  # (B,1,13,20)
            return self.netfcaud(self.netcnnaud(x).flatten(1))

        def forward_lip(self, x):  # (B,3,5,224,224)
            return self.netfclip(self.netcnnlip(x).flatten(1))

    return SyncNet()


def load_syncnet(path: str | os.PathLike | None = None, device: str = "cpu"):
    """The SyncNet model with weights from `path` (default weights_dir()/syncnet_v2.model).
    Raises MissingToolError naming the file when it is missing or not a SyncNet state dict."""
    import torch

    p = Path(path) if path else syncnet_path()
    if not p.is_file():
        raise MissingToolError(f"SyncNet weights {p} missing: download {SYNCNET_URL} there "
                               "(or set TALKCTL_WEIGHTS to the folder holding syncnet_v2.model)")
    net = build_syncnet()
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}, not a state dict")
        own = net.state_dict()
        unknown = [k for k in state if k not in own]
        absent = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        if unknown or absent:
            raise KeyError(f"keys do not match SyncNet ({(unknown or absent)[0]!r})")
        net.load_state_dict(state, strict=False)
    except Exception as exc:
        raise MissingToolError(f"{p} is not a usable SyncNet state dict ({exc}); download it again from {SYNCNET_URL}") from None
    return net.eval().to(device)


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def mfcc(signal, sample_rate: int = 16000, numcep: int = 13, nfilt: int = 26, nfft: int = 512,
         winlen: float = 0.025, winstep: float = 0.01, preemph: float = 0.97, ceplifter: int = 22) -> np.ndarray:
    """MFCCs at 100 Hz, (N, numcep), computed the way python_speech_features.mfcc does with its
    defaults (which is what SyncNet was trained on): pre-emphasis, rectangular 25 ms frames,
    power spectrum / nfft, 26 mel filters, log, DCT-II (ortho), lifter 22, c0 = log frame energy."""
    from scipy.fft import dct

    sig = np.asarray(signal, np.float64).ravel()
    sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])
    flen, fstep = int(round(winlen * sample_rate)), int(round(winstep * sample_rate))
    nframes = 1 if len(sig) <= flen else 1 + int(math.ceil((len(sig) - flen) / fstep))
    sig = np.pad(sig, (0, (nframes - 1) * fstep + flen - len(sig)))
    idx = np.arange(flen)[None, :] + fstep * np.arange(nframes)[:, None]
    pspec = np.abs(np.fft.rfft(sig[idx], nfft)) ** 2 / nfft
    energy = pspec.sum(1)
    energy[energy == 0] = np.finfo(float).eps
    bins = np.floor((nfft + 1) * _mel2hz(np.linspace(_hz2mel(0), _hz2mel(sample_rate / 2), nfilt + 2)) / sample_rate)
    fbank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        for i in range(lo, mid):
            fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(mid, hi):
            fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = pspec @ fbank.T
    feat[feat == 0] = np.finfo(float).eps
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    cep *= 1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter)
    cep[:, 0] = np.log(energy)
    return cep


def syncnet_embeddings(model, frames_rgb, wav, sample_rate: int = 16000, batch: int = 20):
    """Per-window SyncNet embeddings: video windows of 5 frames starting at each frame, audio
    windows of 20 MFCC frames (0.2 s) starting at the same time. frames_rgb: (T,H,W,3) uint8
    face crops, anything sliceable (numpy array, h5py dataset: read one batch at a time);
    resized to 224x224 here. wav: 16 kHz float in [-1,1].
    Returns (video (N,D), audio (N,D)) torch tensors, N = min(T, samples/640) - 5."""
    import cv2
    import torch

    if sample_rate != 16000:
        raise ValueError("SyncNet expects 16 kHz audio")
    dev = next(model.parameters()).device
    n = min(len(frames_rgb), len(wav) // 640) - 5
    if n < 1:
        raise ValueError(f"SyncNet needs at least 6 frames of video and audio, got {len(frames_rgb)} frames")
    # syncnet_python reads wav files as int16 and frames with OpenCV (BGR, 0-255)
    cc = torch.from_numpy(mfcc(np.asarray(wav, np.float64) * 32768.0).T.astype(np.float32))  # (13, M)

    def to_bgr224(f):
        f = np.asarray(f)
        interp = cv2.INTER_AREA if f.shape[0] > 224 else cv2.INTER_LINEAR
        return cv2.resize(f, (224, 224), interpolation=interp)[..., ::-1]

    vf, af = [], []
    with torch.no_grad():
        for s in range(0, n, batch):
            e = min(n, s + batch)
            clip = np.stack([to_bgr224(f) for f in frames_rgb[s:e + 4]])  # frames s .. e+3
            clip = torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)).astype(np.float32))
            v = torch.stack([clip[:, i - s:i - s + 5] for i in range(s, e)]).to(dev)
            a = torch.stack([cc[None, :, 4 * i:4 * i + 20] for i in range(s, e)]).to(dev)
            vf.append(model.forward_lip(v).cpu())
            af.append(model.forward_aud(a).cpu())
    return torch.cat(vf), torch.cat(af)


def sync_offset(video_feat, audio_feat, vshift: int = 15) -> dict:
    """SyncNet's offset/confidence from embeddings (as SyncNetInstance.evaluate):
    dists[i, j] = |v_i - a_(i+j-vshift)| (zero-padded audio), averaged over i;
    offset = vshift - argmin_j: offset k > 0 means the video shows at frame i what the audio
    had at frame i-k (video behind audio). confidence = median - min of the mean distances."""
    import torch
    import torch.nn.functional as F

    v, a = torch.as_tensor(video_feat, dtype=torch.float32), torch.as_tensor(audio_feat, dtype=torch.float32)
    win = 2 * vshift + 1
    ap = F.pad(a, (0, 0, vshift, vshift))
    dists = torch.stack([F.pairwise_distance(v[[i]].repeat(win, 1), ap[i:i + win]) for i in range(len(v))])
    mdist = dists.mean(0)
    minval, minidx = torch.min(mdist, 0)
    return {"offset": int(vshift - int(minidx)), "confidence": float(torch.median(mdist) - minval),
            "min_dist": float(minval), "dists": dists.numpy()}


def syncnet_score(frames_rgb, wav, model=None, vshift: int = 15, batch: int = 20) -> dict:
    """SyncNet offset and confidence of a face-crop video with its audio (see sync_offset).
    Loads the model when not given (MissingToolError naming the file when absent)."""
    model = model if model is not None else load_syncnet()
    v, a = syncnet_embeddings(model, frames_rgb, wav, batch=batch)
    out = sync_offset(v, a, vshift)
    out.pop("dists")
    return out
