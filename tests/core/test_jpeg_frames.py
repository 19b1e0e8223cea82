"""Frames stored as JPEG (jpeg_frames.py): the lowest quality that keeps MIN_PSNR_DB, read back
through the same interface as raw frames."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from talkctl import jpeg_frames as jf
from talkctl.synthetic import make_subject


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Frames of the synthetic talking subject (a smooth face on a plain background) and noisy ones."""
    from talkctl.media.video_in import FrameStream

    subject = make_subject(tmp_path_factory.mktemp("jpeg") / "s", seconds=0.4, size=128, seed=3)
    with FrameStream(subject.video_path, None, 128, 128) as stream:
        smooth = [f for _, f in zip(range(4), stream)]
    rng = np.random.default_rng(0)
    noisy = [np.clip(f.astype(np.int16) + rng.integers(-40, 41, f.shape), 0, 255).astype(np.uint8) for f in smooth]
    return smooth, noisy


@pytest.mark.parametrize("subsampling", [2, 0])
def test_the_lowest_quality_that_keeps_the_psnr_is_chosen(frames, subsampling):
    for frame in frames[0] + frames[1]:
        data, q = jf.encode(frame, subsampling)
        assert jf.psnr_db(frame, jf.decode(data)) >= jf.MIN_PSNR_DB or q == jf.QUALITIES[-1]
        k = jf.QUALITIES.index(q)
        if k > 0:  # one step lower would not have kept it (the search found the edge)
            lower = jf.decode(jf._encode(frame, jf.QUALITIES[k - 1], subsampling))
            assert jf.psnr_db(frame, lower) < jf.MIN_PSNR_DB
        assert data == jf._encode(frame, q, subsampling)  # the stored bytes are that quality's, and reproducible


def test_the_smaller_chroma_mode_is_taken_and_kept_for_the_clip(frames):
    for frame in frames[0] + frames[1]:
        both = [jf.encode(frame, sub)[0] for sub in (2, 0)]
        assert jf.encode(frame)[0] == min(both, key=len)
    enc = jf.ClipEncoder()
    first = enc(frames[0][0])
    assert first == jf.encode(frames[0][0]) and enc.subsampling in (2, 0)
    assert [enc(f) for f in frames[1]] == [jf.encode(f, enc.subsampling) for f in frames[1]]


def test_noisy_frames_need_more_quality_than_smooth_ones(frames):
    smooth = max(jf.encode(f)[1] for f in frames[0])
    noisy = min(jf.encode(f)[1] for f in frames[1])
    assert noisy > smooth


def test_psnr_matches_the_definition():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    assert jf.psnr_db(a, b) == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-6)
    assert jf.psnr_db(a, a) == float("inf")


def test_written_frames_read_back(frames, tmp_path):
    smooth = frames[0]
    with h5py.File(tmp_path / "f.h5", "w") as f:
        w = jf.JpegFrameWriter(f, "frames", 128, 128)
        for frame in smooth:
            w.append(*jf.encode(frame))
        w.close()
    with h5py.File(tmp_path / "f.h5", "r") as f:
        images = jf.frame_images(f, "frames")
        assert images.shape == (len(smooth), 128, 128, 3)
        for i, frame in enumerate(smooth):
            assert jf.psnr_db(frame, images[i]) >= jf.MIN_PSNR_DB
