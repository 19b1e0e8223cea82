"""The built-in demo: a generated subject taken through the same stages a user's video goes through.

Nothing here is demo-specific inside the stages: the demo makes a clip (talkctl.synthetic),
calls pipeline.run_stage exactly as the CLI does (sizes given as the same per-stage
overrides a user would pass with --set), then renders the head saying an unseen synthetic
voice and evaluates it, through the same runner.

Results: OUT/demo.mp4 (the head saying OUT/voice.wav), OUT/run/report.html and
OUT/run/eval.json, OUT/subject/ (the generated clip and its ground truth).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from talkctl.pipeline import CHAIN, run_stage
from talkctl.progress import null_progress
from talkctl.rundir import RunDir

# Settings per stage for the demo (the tiny preset's 128 px, with more steps for a clip of 12 s):
# the same keys `--set` takes. Measured on a 2-core CPU shared with other jobs: 2 min 58 s (load ~2, with
# train-a2l) to 5 min 32 s (load ~6) for the whole demo, training ~80 % of it.
DEMO_OVERRIDES: dict[str, dict[str, dict]] = {
    "tiny": {
        "init-static": {"head_iterations": 1200, "torso_iterations": 300, "densify_start": 100,
                        "densify_every": 100, "densify_stop": 900, "densify_max_gaussians": 6000, "val_every": 300,
                        "checkpoint_every": 300},
        "train-deform": {"iterations": 1200, "densify_start": 100, "densify_every": 100,
                         "densify_stop": 900, "densify_max_gaussians": 6000, "val_every": 300, "checkpoint_every": 300},
        "train-torso": {"iterations": 300, "val_every": 100, "checkpoint_every": 100},
    },
}


def run_demo(out_dir: Path, preset: str = "tiny", seconds: float = 12.0, size: int = 256,
             device: str = "auto", progress: Callable = null_progress,
             on_stage: Callable[[dict], None] = lambda s: None, voice_seconds: float = 8.0,
             overrides: dict[str, dict] | None = None) -> dict:
    from talkctl.synthetic.audio import make_audio
    from talkctl.synthetic.clip import make_subject

    out_dir = Path(out_dir).absolute()
    subject = make_subject(out_dir / "subject", seconds=seconds, size=size, seed=0)
    run = RunDir(out_dir / "run")
    run.set_video(subject.video_path)
    overrides = DEMO_OVERRIDES.get(preset, {}) if overrides is None else overrides
    done = []
    for name in CHAIN:
        summary = run_stage(name, run, preset=preset, device=device, progress=progress,
                            overrides=overrides.get(name))
        done.append(summary)
        on_stage(summary)
    result = {"video": str(subject.video_path), "run": str(run), "stages": [s["stage"] for s in done]}
    voice = make_audio(voice_seconds, seed=1)  # the unseen speaker: not the subject's voice
    voice_path = voice.write_wav(out_dir / "voice.wav")
    r = run_stage("render", run, preset=preset, device=device, progress=progress,
                  overrides={**(overrides.get("render") or {}), "audio": voice_path, "output": out_dir / "demo.mp4"})
    on_stage(r)
    e = run_stage("eval", run, preset=preset, device=device, progress=progress,
                  overrides={**(overrides.get("eval") or {}), "audio": voice_path})
    fig = e["figures"]
    on_stage({"stage": "eval", "status": "done", "run": str(run), "psnr": fig.get("psnr"),
              "ssim": fig.get("ssim"), "lmd": fig.get("lmd"), "mouth_corr": fig.get("mouth_corr"),  # vs the real mouth
              "render_fps": fig.get("render_fps")})
    result.update({"voice": str(voice_path), "demo_video": r["output"], "report": e["report"],
                   "eval_json": e["eval_json"], "render": r, "figures": fig})
    result["stages"] += ["render", "eval"]
    result["status"] = "complete"
    return result
