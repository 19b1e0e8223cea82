import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math

import numpy as np
import pytest
import torch

from talkctl import metrics
from talkctl.errors import MissingToolError

torch.set_num_threads(1)


@pytest.fixture
def weights(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv("TALKCTL_WEIGHTS", str(d))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no real cache
    return d


def _pair(seed=0, h=48, w=40):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([np.sin(x / 5.0), np.cos(y / 7.0), np.sin((x + y) / 9.0)], -1) * 0.4 + 0.5
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)
    return a, b


# ---- PSNR / SSIM -----------------------------------------------------------
def test_psnr_known_values_and_mask():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[:4] = 255  # half the pixels off by the full range
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(2))
    assert metrics.psnr(a, a) == math.inf
    mask = np.zeros((8, 8), bool)
    mask[4:] = True
    assert metrics.psnr(a, b, mask=mask) == math.inf  # the error is outside the mask
    mask[3] = True  # 1 wrong row out of 5
    assert metrics.psnr(a, b, mask=mask) == pytest.approx(10 * math.log10(5))
    fa, fb = a / 255.0, b / 255.0
    assert metrics.psnr(fa, fb) == pytest.approx(metrics.psnr(a, b))


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    for seed in range(2):
        a, b = _pair(seed)
        ref = structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0)
        assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-7)
    a8 = (a * 255).astype(np.uint8)
    b8 = (b * 255).astype(np.uint8)
    ref8 = structural_similarity(a8, b8, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255)
    assert metrics.ssim(a8, b8) == pytest.approx(ref8, abs=1e-6)
    assert metrics.ssim(a, a) == pytest.approx(1.0)


def test_ssim_torch_is_differentiable():
    a, b = _pair(1)
    x = torch.tensor(a.transpose(2, 0, 1)[None], dtype=torch.float32)
    y = torch.tensor(b.transpose(2, 0, 1)[None], dtype=torch.float32, requires_grad=True)
    s = metrics.ssim_torch(x, y)
    s.sum().backward()
    assert s.shape == (1,) and y.grad is not None and torch.isfinite(y.grad).all()


# ---- LPIPS -----------------------------------------------------------------
def test_lpips_missing_weights_gives_reason_not_number(weights):
    value, reason = metrics.lpips_distance(*_pair())
    assert value is None
    assert "alex.pth" in reason and metrics.ALEXNET_FILE in reason


def _save_random_lpips(weights):
    """Random LPIPS-alex weights saved in the published layouts (torchvision AlexNet + lpips lin)."""
    torch.manual_seed(0)
    ref = metrics._build_lpips_alex()
    alex = {f"features.{k}": v for k, v in ref.features.state_dict().items()}
    alex["classifier.1.weight"] = torch.zeros(4, 9216)  # ignored, as in lpips
    torch.save(alex, weights / metrics.ALEXNET_FILE)
    lin = {k: v.abs() for k, v in ref.state_dict().items() if k.startswith("lin")}
    (weights / "lpips" / "v0.1").mkdir(parents=True)
    torch.save(lin, weights / "lpips" / "v0.1" / "alex.pth")
    return ref


def test_lpips_loads_files_in_the_published_layout(weights):
    ref = _save_random_lpips(weights)
    model, reason = metrics.load_lpips()
    assert reason is None
    assert torch.equal(model.features[3].weight, ref.features[3].weight)
    a, b = _pair(0, 64, 64)
    same, _ = metrics.lpips_distance(a, a, model=model)
    diff, _ = metrics.lpips_distance(a, b, model=model)
    far, _ = metrics.lpips_distance(a, 1 - a, model=model)
    assert same == pytest.approx(0.0, abs=1e-6) and 0 < diff < far
    # a file with the wrong keys is reported, not half-loaded
    torch.save({"something": torch.zeros(1)}, weights / "lpips" / "v0.1" / "alex.pth")
    model, reason = metrics.load_lpips()
    assert model is None and "unreadable" in reason


def test_training_loss_uses_the_same_lpips_when_its_files_are_present(weights):
    from talkctl.gs import losses

    assert losses.perceptual_loss("auto")[0] == "dssim"  # no files yet: D-SSIM stands in
    with pytest.raises(Exception, match="alex"):
        losses.perceptual_loss("lpips")
    _save_random_lpips(weights)
    name, fn = losses.perceptual_loss("auto")
    assert name == "lpips"
    a = torch.rand(2, 48, 48, 3, requires_grad=True)
    loss = fn(a, torch.rand(2, 48, 48, 3))
    loss.backward()
    assert loss.item() > 0 and a.grad.abs().sum() > 0


# ---- landmarks, mouth, sync ------------------------------------------------
def test_lmd_normalisations():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 100, (5, 68, 2))
    ref[:, 36] = [10, 50]
    ref[:, 45] = [50, 50]  # inter-ocular distance 40
    pred = ref.copy()
    pred[:, 48:68, 1] += 2.0  # the mouth moved 2 px
    pred[:, 0:10] += 30  # non-mouth points do not count
    assert metrics.lmd(pred, ref, normalise=None) == pytest.approx(2.0)
    assert metrics.lmd(pred, ref) == pytest.approx(2.0 / 40)
    diag = np.linalg.norm(ref.max(1) - ref.min(1), axis=-1)
    assert metrics.lmd(pred, ref, normalise="box") == pytest.approx(np.mean(2.0 / diag))
    mp = np.zeros((2, 478, 3))
    assert metrics.lmd(mp, mp, normalise=None) == 0.0
    with pytest.raises(ValueError):
        metrics.lmd(np.zeros((2, 10, 2)), np.zeros((2, 10, 2)))


def test_mediapipe_lip_indices_match_mediapipe():
    conn = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")
    lips = sorted({i for edge in conn.FACEMESH_LIPS for i in edge})
    assert tuple(lips) == metrics.MEDIAPIPE_LIPS


def test_mouth_correlation():
    t = np.linspace(0, 6, 100)
    assert metrics.mouth_open_correlation(np.sin(t), 3 * np.sin(t) + 1) == pytest.approx(1.0)
    assert metrics.mouth_open_correlation(np.sin(t), -np.sin(t)) == pytest.approx(-1.0)
    assert math.isnan(metrics.pearson(np.ones(5), np.arange(5)))


def _syllables(n_frames, sr=16000, seed=0):
    """Speech-like audio: a 500 Hz tone gated on/off at random per frame, and its envelope."""
    rng = np.random.default_rng(seed)
    env = np.repeat(rng.random(n_frames) > 0.5, 640).astype(float)
    t = np.arange(n_frames * 640) / sr
    return 0.5 * env * np.sin(2 * np.pi * 500 * t), env[::640]


def test_audio_energy_follows_loudness_and_band():
    wav, env = _syllables(50)
    e = metrics.audio_energy_per_frame(wav)
    assert e.shape == (50,)
    assert e[env > 0].min() > e[env == 0].max() + 40
    low = 0.5 * np.sin(2 * np.pi * 100 * np.arange(16000) / 16000)  # below the 300 Hz band
    assert metrics.audio_energy_per_frame(low).mean() < metrics.audio_energy_per_frame(low, band=None).mean() - 20


@pytest.mark.parametrize("shift", [-2, 0, 1, 2])
def test_audio_mouth_sync_finds_the_lag(shift):
    wav, env = _syllables(120, seed=3)
    mouth = np.roll(env, shift) + 0.01 * np.random.default_rng(1).normal(size=env.size)  # mouth[t+shift] = env[t]
    corr, lag = metrics.audio_mouth_sync(mouth, wav)
    assert lag == shift and corr > 0.9
    corr_far, _ = metrics.audio_mouth_sync(np.random.default_rng(5).random(120), wav)
    assert corr_far < 0.5


# ---- SyncNet ---------------------------------------------------------------
def test_syncnet_missing_weights_names_the_file(weights):
    assert "syncnet_v2.model" in metrics.syncnet_status()
    with pytest.raises(MissingToolError, match="syncnet_v2.model"):
        metrics.load_syncnet()


def test_sync_offset_from_constructed_embeddings():
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.normal(size=(40, 16)), dtype=torch.float32)
    for k in (-3, 0, 4):
        v = torch.roll(a, k, dims=0)  # v_i = a_(i-k): video behind audio by k frames
        out = metrics.sync_offset(v, a, vshift=6)
        assert out["offset"] == k and out["confidence"] > 0 and out["dists"].shape == (40, 13)


def test_syncnet_loads_a_saved_state_dict_and_scores(weights):
    torch.manual_seed(0)
    net = metrics.build_syncnet()
    for m in net.modules():  # non-trivial BN statistics, to check they are loaded too
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), weights / "syncnet_v2.model")
    assert metrics.syncnet_status() is None
    model = metrics.load_syncnet()
    assert torch.equal(model.netcnnlip[1].running_mean, net.netcnnlip[1].running_mean)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (9, 64, 64, 3), dtype=np.uint8)  # resized to 224 inside
    wav = (0.1 * rng.normal(size=9 * 640)).astype(np.float32)
    v, a = metrics.syncnet_embeddings(model, frames, wav)
    assert v.shape == (4, 1024) and a.shape == (4, 1024)
    v3, a3 = metrics.syncnet_embeddings(model, frames, wav, batch=3)  # windows across batch edges
    assert torch.allclose(v, v3, atol=1e-4) and torch.allclose(a, a3, atol=1e-4)
    s1 = metrics.syncnet_score(frames, wav, model=model, vshift=2)
    s2 = metrics.syncnet_score(frames, wav, model=model, vshift=2)
    assert s1 == s2 and -2 <= s1["offset"] <= 2 and s1["confidence"] >= 0
    torch.save({"netcnnaud.0.weight": torch.zeros(1)}, weights / "syncnet_v2.model")
    with pytest.raises(MissingToolError, match="not a usable SyncNet"):
        metrics.load_syncnet()


def test_mfcc_shape_rate_and_energy():
    sr = 16000
    t = np.arange(sr) / sr
    quiet = 0.01 * np.sin(2 * np.pi * 440 * t) * 32768
    c = metrics.mfcc(quiet)
    assert c.shape == (99, 13) and np.isfinite(c).all()  # 100 Hz: 1 + ceil((16000-400)/160)
    assert metrics.mfcc(quiet * 10)[:, 0].mean() == pytest.approx(c[:, 0].mean() + 2 * math.log(10), abs=1e-6)


def test_held_out_start():
    from talkctl.timebase import held_out_start

    assert held_out_start(110) == 100 and held_out_start(11) == 10


def test_image_figures_accumulate(weights):
    acc = metrics.ImageFigures()
    a, b = _pair(0)
    mask = np.zeros(a.shape[:2], bool)
    mask[10:30, 10:30] = True
    r1 = acc.add(a, b, mask)
    r2 = acc.add(a, a)
    s = acc.summary()
    assert s["frames"] == 2 and s["psnr"] == math.inf  # an identical frame is honest: +inf
    assert s["ssim"] == pytest.approx((r1["ssim"] + r2["ssim"]) / 2)
    assert s["psnr_face"] == pytest.approx(r1["psnr_face"])
    assert s["lpips"] is None and "alex.pth" in s["lpips_reason"]


def test_mouth_follow_lag_and_amplitude():
    """The drive-video figure on known series: a render half as wide, two frames late."""
    from talkctl.metrics.lipsync import amplitude_ratio, mouth_follow

    rng = np.random.default_rng(0)
    real = np.convolve(rng.normal(size=300), np.ones(5) / 5, mode="same")
    late = 0.5 * np.roll(real, 2)
    late[[10, 40]] = np.nan  # frames without a face are interpolated, not fatal
    f = mouth_follow(late, real, max_lag=3)
    assert f["best_lag"] == 2 and f["best_corr"] > 0.97 and f["corr"] < f["best_corr"] - 0.2
    assert 0.45 < f["amp"] < 0.55 and f["frames"] == 300
    assert 0.45 < amplitude_ratio(late, real) < 0.55
    same = mouth_follow(real, real)
    assert same["best_lag"] == 0 and abs(same["corr"] - 1) < 1e-9 and abs(same["amp"] - 1) < 1e-9
    assert math.isnan(amplitude_ratio(real, np.zeros_like(real)))  # a still real mouth: no ratio


def test_correlation_interval_covers_and_narrows_with_length():
    """The bootstrap interval holds the measured correlation, is wide on a few seconds and
    narrow on minutes; too few frames give no interval; same series, same interval."""
    from talkctl.metrics.lipsync import correlation_interval, pearson

    rng = np.random.default_rng(1)
    smooth = lambda n: np.convolve(rng.normal(size=n), np.ones(5) / 5, mode="same")
    intervals = {}
    for n in (50, 1500):
        real = smooth(n)
        rendered = real + 1.2 * smooth(n)  # a noisy follower, true corr ~0.64
        lo, hi = correlation_interval(rendered, real)
        assert lo < pearson(rendered, real) < hi
        intervals[n] = hi - lo
        assert correlation_interval(rendered, real) == (lo, hi)
    assert intervals[50] > 0.25 and intervals[1500] < 0.15 and intervals[50] > 2.5 * intervals[1500]
    assert correlation_interval(np.arange(15.0), np.arange(15.0)) is None  # under two blocks
    with pytest.raises(ValueError):
        correlation_interval(np.zeros(30), np.zeros(31))
