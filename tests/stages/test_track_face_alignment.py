"""The face-alignment landmark backend's loading code, against a stand-in package.

face-alignment is not installed here and its weights cannot be downloaded, so a tiny fake
`face_alignment` package with the real one's module layout and API checks what talkctl does:
which weight files the probe asks for (named after the installed package's URLs), that it never
lets face-alignment download, and how the detector calls the library.
"""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from talkctl.backends import select
from talkctl.errors import MissingToolError
from talkctl.face import landmarks as lmk

FAKE = {
    "face_alignment/__init__.py": """
        from enum import IntEnum
        import numpy as np
        CALLS = []

        class LandmarksType(IntEnum):
            TWO_D = 1
            TWO_HALF_D = 2
            THREE_D = 3

        class _Detector:
            def detect_from_image(self, bgr):
                CALLS.append(("detect", bgr.shape))
                return [np.array([10.0, 20.0, 50.0, 70.0, 0.99]), np.array([0, 0, 5, 5, 0.1])]

        class FaceAlignment:
            def __init__(self, landmarks_type, device="cuda", flip_input=False, face_detector="sfd", **kw):
                CALLS.append(("init", landmarks_type, device, flip_input, face_detector))
                self.face_detector = _Detector()

            def get_landmarks_from_image(self, image, detected_faces=None):
                CALLS.append(("landmarks", image.shape, len(detected_faces)))
                return [np.tile([[30.0, 40.0, -2.0]], (68, 1)) for _ in detected_faces]
    """,
    "face_alignment/api.py": """
        models_urls = {"1.6": {"3DFAN-4": "https://x/3DFAN4_1.6-aaa.zip", "depth": "https://x/depth_1.6-bbb.zip"}}
        default_model_urls = {"2DFAN-4": "https://x/2DFAN4-ccc.zip", "3DFAN-4": "https://x/3DFAN4-ddd.zip",
                              "depth": "https://x/depth-eee.zip"}
    """,
    "face_alignment/detection/__init__.py": "",
    "face_alignment/detection/sfd/__init__.py": "",
    "face_alignment/detection/sfd/sfd_detector.py": 'models_urls = {"s3fd": "https://x/s3fd-fff.pth"}\n',
}


@pytest.fixture
def fake_fa(tmp_path, monkeypatch):
    for rel, text in FAKE.items():
        path = tmp_path / "pkgs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in [m for m in sys.modules if m.startswith("face_alignment")]:
        monkeypatch.delitem(sys.modules, name)
    yield tmp_path / "torch" / "hub" / "checkpoints"
    for name in [m for m in sys.modules if m.startswith("face_alignment")]:
        del sys.modules[name]


def test_probe_names_the_missing_weight_files_of_the_installed_version(fake_fa):
    files = lmk.fan_weight_files()
    # torch 2.x is not in the package's per-version table, so it loads the default URLs
    assert files == {"detector": "s3fd-fff.pth", "landmarks": "3DFAN4-ddd.zip", "depth": "depth-eee.zip"}
    reason = lmk._probe_face_alignment("cpu")
    assert str(fake_fa) in reason and "s3fd-fff.pth" in reason and "3DFAN4-ddd.zip" in reason
    with pytest.raises(MissingToolError, match="depth-eee.zip"):
        select("landmarks", "face-alignment", "cpu")
    with pytest.raises(MissingToolError, match="weights missing"):  # never lets the library download
        lmk.FaceAlignmentDetector()


def test_detector_uses_the_cached_weights_and_the_library_api(fake_fa):
    fake_fa.mkdir(parents=True)
    for name in ("s3fd-fff.pth", "3DFAN4-ddd.zip", "depth-eee.zip"):
        (fake_fa / name).write_bytes(b"weights")
    assert lmk._probe_face_alignment("cpu") is None
    Detector = select("landmarks", "face-alignment", "cpu").get()
    assert Detector.scheme.n == 68
    det = Detector(max_faces=1, device="cpu")
    rgb = np.zeros((96, 96, 3), np.uint8)
    faces = det.faces(rgb)
    assert len(faces) == 1 and faces[0].shape == (68, 3) and faces[0].dtype == np.float32
    assert det.boxes(rgb) == [(10.0, 20.0, 50.0, 70.0, pytest.approx(0.99))]  # low-score box dropped
    import face_alignment

    init = [c for c in face_alignment.CALLS if c[0] == "init"][0]
    assert init == ("init", face_alignment.LandmarksType.THREE_D, "cpu", False, "sfd")
