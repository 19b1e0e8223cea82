"""Make talkctl's built-in demo clip: a synthetic talking head with speech-like audio.

    python examples/make_demo_clip.py [OUT_DIR]
"""
import sys
from pathlib import Path

from talkctl.synthetic.clip import make_subject

subject = make_subject(Path(sys.argv[1] if len(sys.argv) > 1 else "demo"), seconds=10.0, size=512)
print(subject.video_path)
