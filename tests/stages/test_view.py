"""`talkctl view`: a viser server on a tiny trained run, fetched over HTTP, stopped cleanly."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import trained_run

pytest.importorskip("viser", reason="viser (the `view` extra, in `dev`) serves the viewer")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 60.0) -> bytes:
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


def test_view_serves_the_page_and_stops_on_ctrl_c(trained, tmp_path):
    run, _ = trained
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "talkctl", "view", "--run", str(run.path), "--port", str(port),
                             "--device", "cpu", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    try:
        page = _get(f"http://127.0.0.1:{port}/")
        assert b"<html" in page.lower() and b"<script" in page.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["stage"] == "view" and summary["url"] == f"http://127.0.0.1:{port}"
    with pytest.raises(OSError):  # the port is free again
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_viewer_frames_move_the_head_and_put_the_torso_in_head_space(trained):
    from talkctl.viewer import Viewer

    run, _ = trained
    v = Viewer(run, "cpu")
    a, b = v.head_splats(0), v.head_splats(min(5, v.drive.n_frames - 1))
    assert a.centers.shape == b.centers.shape and a.covariances.shape == (len(a.centers), 3, 3)
    assert np.all(np.linalg.eigvalsh(a.covariances) > -1e-9)  # covariances are positive semi-definite
    assert 0 <= a.rgbs.min() and a.rgbs.max() <= 1 and np.all((0 < a.opacities) & (a.opacities < 1))
    assert np.abs(a.centers - b.centers).max() > 0  # the drive moves the head
    t = v.torso_splats(0)
    # the torso is moved from the camera's space into the head's: back through the head pose it is where it was
    w2c = v.drive.world_to_cam[0]
    cam = t.centers @ w2c[:3, :3].T + w2c[:3, 3]
    means, _, _ = v.torso.deformed(v.drive.world_to_cam[:1])
    np.testing.assert_allclose(cam, means[0].numpy(), atol=1e-4)
