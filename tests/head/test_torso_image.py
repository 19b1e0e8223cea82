"""The image torso's base (train-torso mode=image, image_base): the static torso it corrects, drawn
at each frame's tracked torso shift (head.torso_image)."""
import numpy as np
import torch

from talkctl.gs.torso_track import shifted_intrinsics
from talkctl.head.conditions import PoseCondition
from talkctl.head.torso_image import ImageTorsoModel, StyleUNet, shifted

R = 32


def _base(seed=0):
    rng = np.random.default_rng(seed)
    base = np.zeros((R, R, 4), np.float32)
    base[..., :3] = rng.uniform(0, 1, (R, R, 3))
    base[R // 2:, :, 3] = 1.0  # a torso in the lower half
    return base


def test_shifted_moves_the_base_by_whole_and_half_pixels():
    base = np.zeros((R, R, 4), np.float32)
    base[12, 10] = 1.0
    out = shifted(torch.as_tensor(base), [[2.0, 3.0], [0.0, 0.0]]).numpy()
    assert out.shape == (2, R, R, 4)
    assert np.unravel_index(out[0, ..., 0].argmax(), (R, R)) == (15, 12)  # x right by 2, y down by 3
    np.testing.assert_allclose(out[1], base, atol=1e-6)
    half = shifted(torch.as_tensor(base), [[0.5, 0.0]]).numpy()[0, 12, :, 0]
    assert abs(half[10] - 0.5) < 1e-5 and abs(half[11] - 0.5) < 1e-5


def test_untrained_net_gives_the_base_and_learns_a_correction():
    pose = PoseCondition(2, np.zeros(6, np.float32), np.ones(6, np.float32))
    net = StyleUNet(pose.out_dim, channels=8, depth=2, style_dim=8, base=True)
    assert net.spec()["base"] is True
    base = torch.as_tensor(_base())[None].expand(2, R, R, 4)
    head = torch.zeros(2, R, R, 3), torch.zeros(2, R, R, 1)
    code = torch.zeros(2, pose.out_dim)
    rgb, alpha = net(*head, code, base)
    torch.testing.assert_close(alpha, base[..., 3:], atol=2e-3, rtol=0)  # the base's, kept off 0 and 1
    torch.testing.assert_close(rgb, base[..., :3] * base[..., 3:], atol=2e-3, rtol=0)
    # the correction trains: a few steps towards a darker torso lower the loss
    target = base[..., :3] * base[..., 3:] * 0.5
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        rgb, _ = net(*head, code, base)
        loss = (rgb - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_render_reads_the_torso_shift_from_the_cameras():
    pose = PoseCondition(2, np.zeros(6, np.float32), np.ones(6, np.float32))
    net = StyleUNet(pose.out_dim, channels=8, depth=2, style_dim=8, base=True)
    K = np.array([[40.0, 0, R / 2], [0, 40.0, R / 2], [0, 0, 1]], np.float32)
    torso = ImageTorsoModel(net, pose, {"resolution": R, "base": _base(), "K": K})
    size = 2 * R  # cameras at twice the training size: the shift is read back at the training size
    K_size = K.copy()
    K_size[:2] *= 2
    frac = np.array([[0.0, 0.0], [0.05, -0.1]], np.float32)
    Ks = shifted_intrinsics(K_size, frac * size)
    np.testing.assert_allclose(torso.shift_of(Ks, size), frac * R, atol=1e-4)
    assert torso.shift_of(K_size, size) is None  # one camera: no per-frame shift
    w2c = np.repeat(np.eye(4, dtype=np.float32)[None], 2, 0)
    out = torso.render(w2c, Ks, size, head_rgb=torch.zeros(2, size, size, 3), head_alpha=torch.zeros(2, size, size, 1))
    assert out.alpha.shape == (2, size, size, 1)
    # frame 1's torso moved up by 0.1 of the side: its top edge is higher than frame 0's
    top = [int(np.argmax(out.alpha[i, :, size // 2, 0].numpy() > 0.5)) for i in range(2)]
    assert top[0] - top[1] == round(0.1 * size), top
