import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tempfile

# Hermetic weight look-ups: tests that need weight files make their own (tiny, random), so a
# developer's real caches (LPIPS, SyncNet, HF models) cannot change what "auto" picks here.
_EMPTY = tempfile.mkdtemp(prefix="talkctl-test-caches-")
os.environ["TALKCTL_WEIGHTS"] = os.path.join(_EMPTY, "weights")
os.environ["TORCH_HOME"] = os.path.join(_EMPTY, "torch")
os.environ["HF_HOME"] = os.path.join(_EMPTY, "hf")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TALKCTL_CACHE_DIR"] = os.path.join(_EMPTY, "cache")  # frames decoded from a stored source (frame_cache)

import shutil
import sys
import types
from pathlib import Path

import pytest


def pytest_unconfigure(config):
    shutil.rmtree(_EMPTY, ignore_errors=True)  # the hermetic caches above: nothing left in /tmp

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TALKCTL_SHARED", REPO.parent / "shared"))  # env: checkouts elsewhere


def shared_path(*parts) -> Path:
    """A file under ../shared, or skip the test with the reason."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (not present on this machine)")
    return p


@pytest.fixture
def fake_pipeline(monkeypatch):
    """Register the fake stages of tests/fixtures/fake_stages.py in place of the real stage table."""
    from talkctl import artifacts, pipeline

    import fake_stages

    mod_a = types.SimpleNamespace(**{k: getattr(fake_stages, k) for k in ("VERSION", "DEFAULTS", "PRESETS", "NON_SEMANTIC")},
                                  run=fake_stages.run_a)
    mod_b = types.SimpleNamespace(**{k: getattr(fake_stages, k) for k in ("VERSION", "DEFAULTS", "PRESETS", "NON_SEMANTIC")},
                                  run=fake_stages.run_b)
    specs = [
        pipeline.StageSpec("fake-a", "fake_a_mod", ("video",), ("fake_a",), "a"),
        pipeline.StageSpec("fake-b", "fake_b_mod", ("fake_a",), ("fake_b",), "b"),
    ]
    monkeypatch.setitem(sys.modules, "fake_a_mod", mod_a)
    monkeypatch.setitem(sys.modules, "fake_b_mod", mod_b)
    monkeypatch.setattr(pipeline, "STAGES", tuple(specs))
    monkeypatch.setattr(pipeline, "STAGE_BY_NAME", {s.name: s for s in specs})
    monkeypatch.setattr(pipeline, "CHAIN", [s.name for s in specs])
    monkeypatch.setitem(artifacts.ARTIFACTS, "fake_a", artifacts.ArtifactSpec("fake_a", "a.h5", "talkctl.fake_a", 1, "fake-a"))
    monkeypatch.setitem(artifacts.ARTIFACTS, "fake_b", artifacts.ArtifactSpec("fake_b", "b.h5", "talkctl.fake_b", 1, "fake-b"))
    fake_stages.calls.update(a=0, b=0)
    return fake_stages


@pytest.fixture(scope="session")
def synthetic_subject(tmp_path_factory):
    """The synthetic talking subject (4 s, 256x256, 25 fps, seed 0) with its ground truth,
    rendered once per test session (~2 s). See talkctl/synthetic.py for the truth fields."""
    from talkctl.synthetic import make_subject

    return make_subject(tmp_path_factory.mktemp("synthetic"), seconds=4.0, size=256, seed=0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (pytestmark = usefixtures): deterministic training tests,
    polite on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
