"""`talkctl track` on a real shared clip (skipped without ../shared): the quality targets."""
from __future__ import annotations

import json

import pytest

from conftest import shared_path
from talkctl.cli import main


@pytest.mark.shared
@pytest.mark.slow
def test_german_clip_meets_the_quality_targets(tmp_path, capsys):
    video = shared_path("data", "video", "german_20s.mp4")
    assert main(["track", str(video), "--run", str(tmp_path / "run"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["frames"] == 500 and s["crop"] == [0, 0, 512]  # a 512x512 crop is kept whole
    assert s["face_rate"] >= 0.99
    assert s["median_reproj_px"] <= 3.0  # rigid landmarks, px at 512x512
    assert s["max_rotation_step_deg"] < 5.0  # no pose jumps (a news anchor barely turns)
    assert 0 < s["blink_frames"] < 100
