"""Face landmark backends (registry kind `landmarks`) and the index sets the track stage needs.

Backends:
  mediapipe       legacy `mediapipe.solutions.face_mesh`, refine_landmarks=True: 478 points
                  (468 mesh + 10 iris). Its models ship inside the mediapipe wheel: no download.
  face-alignment  FAN 3D (68 points, S3FD detector). Needs three weight files in the torch hub
                  cache (`<torch hub dir>/checkpoints`, usually ~/.cache/torch/hub/checkpoints);
                  talkctl never downloads them, the probe names what is missing.

A detector (what `backend.get()(...)` returns) has:
  scheme              the `Scheme` below (which index is which part of the face)
  boxes(rgb)          face boxes [(x0, y0, x1, y1, score)] in pixels, for the crop pass
  faces(rgb)          list of (L, 3) float32 arrays: x, y in pixels, z the backend's own depth
                      estimate in the same pixel scale (camera axes: larger z = farther)
  close()
Nothing heavy is imported at module import: `talkctl doctor` imports this module.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkctl.backends import Backend, register
from talkctl.errors import MissingToolError
from talkctl.native_log import native_stderr


@dataclass(frozen=True)
class Scheme:
    """Which landmark index is which part of the face, for one backend's layout."""
    name: str
    n: int
    rigid: tuple[int, ...]        # points that do not move with speech or expression (pose fit)
    right_eye: tuple[int, ...]    # eye contour polygon, subject's right (image left when frontal)
    left_eye: tuple[int, ...]
    outer_lips: tuple[int, ...]   # polygon
    inner_lips: tuple[int, ...]   # polygon
    lip_top: int                  # inner upper lip, middle
    lip_bottom: int               # inner lower lip, middle
    face_oval: tuple[int, ...]    # polygon around the face
    eye_outer: tuple[int, int]    # outer eye corners (right, left): canonical x axis and scale
    face_top: int                 # top of the face (face height = face_top .. chin)
    chin: int
    nose_tip: int                 # closest to the camera on a frontal face (checks the depth sign)


MEDIAPIPE_478 = Scheme(
    name="mediapipe-478",
    n=478,
    # nose bridge and ridge; eye corners (inner canthi are the steadiest); upper forehead;
    # temples and the upper face oval; cheekbones. No lips, jaw, eyelids, brows or iris.
    rigid=(168, 6, 197, 195, 5, 4,
           33, 133, 362, 263, 130, 359,
           10, 151, 9, 108, 337, 67, 297, 109, 338,
           54, 284, 21, 251, 162, 389, 127, 356, 103, 332,
           234, 454, 116, 345, 227, 447),
    right_eye=(33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
    left_eye=(263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249),
    outer_lips=(61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146),
    inner_lips=(78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95),
    lip_top=13,
    lip_bottom=14,
    face_oval=(10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
               152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
    eye_outer=(33, 263),
    face_top=10,
    chin=152,
    nose_tip=1,
)

FAN_68 = Scheme(
    name="ibug-68",
    n=68,
    # nose bridge, eye corners, upper jaw line near the ears, nose base
    rigid=(27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45, 0, 1, 2, 14, 15, 16),
    right_eye=(36, 37, 38, 39, 40, 41),
    left_eye=(42, 43, 44, 45, 46, 47),
    outer_lips=tuple(range(48, 60)),
    inner_lips=tuple(range(60, 68)),
    lip_top=62,
    lip_bottom=66,
    face_oval=tuple(range(0, 17)) + tuple(range(26, 16, -1)),
    eye_outer=(36, 45),
    face_top=27,
    chin=8,
    nose_tip=30,
)


# ---- mediapipe ----------------------------------------------------------------
class MediapipeDetector:
    scheme = MEDIAPIPE_478

    def __init__(self, max_faces: int = 1, video: bool = True, min_confidence: float = 0.5, device: str = "cpu"):
        self.max_faces, self.video, self.min_confidence = max_faces, video, min_confidence
        self._mesh = None
        self._det = None
        self._warm: set[int] = set()

    def _mesh_graph(self):
        if self._mesh is None:
            from mediapipe.python.solutions import face_mesh

            with native_stderr():
                self._mesh = face_mesh.FaceMesh(static_image_mode=not self.video, max_num_faces=self.max_faces,
                                                refine_landmarks=True, min_detection_confidence=self.min_confidence,
                                                min_tracking_confidence=0.5)
        return self._mesh

    def _run(self, graph, rgb: np.ndarray):
        if id(graph) in self._warm:
            return graph.process(np.ascontiguousarray(rgb))
        with native_stderr():  # the first frame makes the C++ side log its setup warnings
            self._warm.add(id(graph))
            return graph.process(np.ascontiguousarray(rgb))

    def boxes(self, rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        if self._det is None:
            from mediapipe.python.solutions import face_detection

            with native_stderr():  # full-range model: also finds small faces (wide shots)
                self._det = face_detection.FaceDetection(model_selection=1, min_detection_confidence=self.min_confidence)
        h, w = rgb.shape[:2]
        res = self._run(self._det, rgb)
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h, float(d.score[0])))
        return out

    def faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        h, w = rgb.shape[:2]
        res = self._run(self._mesh_graph(), rgb)
        out = []
        for face in res.multi_face_landmarks or []:
            a = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
            a[:, 0] *= w
            a[:, 1] *= h
            a[:, 2] *= w  # mediapipe's z uses roughly the x scale
            out.append(a)
        return out

    def close(self) -> None:
        for g in (self._mesh, self._det):
            if g is not None:
                g.close()
        self._mesh = self._det = None


def _probe_mediapipe(device: str) -> str | None:
    if importlib.util.find_spec("mediapipe") is None:
        return "mediapipe is not installed: pip install mediapipe==0.10.21"
    spec = importlib.util.find_spec("mediapipe")
    root = Path(spec.origin).parent
    if not (root / "python" / "solutions" / "face_mesh.py").exists():
        return "this mediapipe has no legacy `solutions.face_mesh`: pip install mediapipe==0.10.21"
    return None


def _load_mediapipe():
    return MediapipeDetector


# ---- face-alignment -------------------------------------------------------------
# File names face-alignment's own loader looks for in the torch hub cache (the basename of
# its download URLs); read from the installed package when possible, these are the fallback.
FAN_FILES_FALLBACK = {"detector": "s3fd-619a316812.pth", "landmarks": "3DFAN4-4a694010b9.zip",
                      "depth": "depth-6c4283c0e0.zip"}
FAN_URL_BASE = "https://www.adrianbulat.com/downloads/python-fan/"


def torch_hub_checkpoints() -> Path:
    """Where torch.hub (and face-alignment's loader) caches weights: $TORCH_HOME/hub/checkpoints."""
    try:
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    except ImportError:  # torch is a dependency; keep the probe alive anyway
        home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
        return Path(home).expanduser() / "hub" / "checkpoints"


def fan_weight_files() -> dict[str, str]:
    """role -> file name the installed face-alignment will load (3D landmarks + depth + S3FD)."""
    files = dict(FAN_FILES_FALLBACK)
    try:
        import torch
        from face_alignment import api
        from face_alignment.detection.sfd import sfd_detector

        ver = torch.__version__.split("+")[0].rsplit(".", 1)[0]
        urls = getattr(api, "models_urls", {}).get(ver) or getattr(api, "default_model_urls", {})
        if urls:
            files["landmarks"] = urls["3DFAN-4"].rsplit("/", 1)[-1]
            files["depth"] = urls["depth"].rsplit("/", 1)[-1]
        files["detector"] = sfd_detector.models_urls["s3fd"].rsplit("/", 1)[-1]
    except Exception:  # older/newer layouts: the fallback names are the current release's
        pass
    return files


def missing_fan_weights() -> list[str]:
    folder = torch_hub_checkpoints()
    return [name for name in fan_weight_files().values() if not (folder / name).is_file()]


def _probe_face_alignment(device: str) -> str | None:
    if importlib.util.find_spec("face_alignment") is None:
        return "face-alignment is not installed: pip install 'talkctl[faces]' (or face-alignment)"
    missing = missing_fan_weights()
    if missing:
        folder = torch_hub_checkpoints()
        return (f"face-alignment weights missing in {folder}: {', '.join(missing)} "
                f"(download from {FAN_URL_BASE}<file> into that folder)")
    return None


class FaceAlignmentDetector:
    """FAN 3D landmarks on S3FD boxes; weights from the torch hub cache only (offline)."""
    scheme = FAN_68

    def __init__(self, max_faces: int = 1, video: bool = True, min_confidence: float = 0.5, device: str = "cpu"):
        missing = missing_fan_weights()
        if missing:  # face-alignment would try to download them: refuse instead
            raise MissingToolError(f"face-alignment weights missing in {torch_hub_checkpoints()}: {', '.join(missing)}; "
                                   f"download from {FAN_URL_BASE}<file>")
        import face_alignment

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        kind = getattr(face_alignment.LandmarksType, "THREE_D", None) or getattr(face_alignment.LandmarksType, "_3D")
        self.fa = face_alignment.FaceAlignment(kind, device=device, flip_input=False, face_detector="sfd")
        self.max_faces, self.min_confidence = max_faces, min_confidence

    def boxes(self, rgb: np.ndarray):
        dets = self.fa.face_detector.detect_from_image(np.ascontiguousarray(rgb[..., ::-1]))
        return [tuple(float(v) for v in d[:5]) for d in dets if float(d[4]) >= self.min_confidence]

    def faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        boxes = self.boxes(rgb)[: self.max_faces]
        if not boxes:
            return []
        pts = self.fa.get_landmarks_from_image(rgb, detected_faces=[np.array(b) for b in boxes])
        return [np.asarray(p, dtype=np.float32)[:, :3] for p in pts or []]

    def close(self) -> None:
        self.fa = None


def _load_face_alignment():
    return FaceAlignmentDetector


register(Backend("landmarks", "mediapipe", _probe_mediapipe, _load_mediapipe,
                 "MediaPipe face mesh, 478 points with iris (models in the wheel)", devices=("cpu", "cuda"),
                 priority=10, capabilities={"n_landmarks": 478, "scheme": MEDIAPIPE_478.name}))
register(Backend("landmarks", "face-alignment", _probe_face_alignment, _load_face_alignment,
                 "FAN 3D, 68 points (S3FD detector; weights in the torch hub cache)", devices=("cpu", "cuda"),
                 priority=5, capabilities={"n_landmarks": 68, "scheme": FAN_68.name}))

