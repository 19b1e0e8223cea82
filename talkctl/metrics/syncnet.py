"""SyncNet (joonson/syncnet_python, syncnet_v2.model): confidence and offset when the weights
are present; the network, its MFCC input and the offset search, built here.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from talkctl.errors import MissingToolError
from talkctl.metrics.weights import weights_dir

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
