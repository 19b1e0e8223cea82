"""Shared pytest fixtures. Keep each one small and session-scoped: the suite runs on 2 cores."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthetic_subject(tmp_path_factory):
    """The synthetic talking subject (4 s, 256x256, 25 fps, seed 0) with its ground truth,
    rendered once per test session (~2 s). See talkctl/synthetic.py for the truth fields."""
    from talkctl.synthetic import make_subject

    return make_subject(tmp_path_factory.mktemp("synthetic"), seconds=4.0, size=256, seed=0)
