"""The run-directory / HDF5 artifact contract: fingerprints, atomicity, staleness, lock, schema."""
import json
import threading

import h5py
import pytest

from talkctl import artifacts, pipeline
from talkctl.errors import ArtifactError, LockedError, UsageError
from talkctl.rundir import RunDir


@pytest.fixture
def run(tmp_path):
    rd = RunDir(tmp_path / "run")
    video = tmp_path / "clip.bin"
    video.write_bytes(b"x" * 100)
    rd.set_video(video)
    return rd


def test_fingerprint_depends_on_stage_version_config_and_inputs():
    base = artifacts.fingerprint("s", 1, {"a": 1}, {"video": "v"})
    assert base == artifacts.fingerprint("s", 1, {"a": 1}, {"video": "v"})
    assert base != artifacts.fingerprint("s", 2, {"a": 1}, {"video": "v"})
    assert base != artifacts.fingerprint("s", 1, {"a": 2}, {"video": "v"})
    assert base != artifacts.fingerprint("s", 1, {"a": 1}, {"video": "w"})
    assert base != artifacts.fingerprint("t", 1, {"a": 1}, {"video": "v"})


def test_second_run_is_up_to_date_and_force_reruns(fake_pipeline, run):
    first = pipeline.run_stage("fake-a", run, preset="fast")
    assert first["status"] == "done" and first["value"] == 100
    again = pipeline.run_stage("fake-a", run, preset="fast")
    assert again["status"] == "up to date"
    assert fake_pipeline.calls["a"] == 1
    forced = pipeline.run_stage("fake-a", run, preset="fast", force=True)
    assert forced["status"] == "done" and fake_pipeline.calls["a"] == 2


def test_non_semantic_setting_does_not_rerun_but_semantic_does(fake_pipeline, run):
    pipeline.run_stage("fake-a", run)
    assert pipeline.run_stage("fake-a", run, overrides={"preview": True})["status"] == "up to date"
    assert pipeline.run_stage("fake-a", run, overrides={"scale": 2.0})["value"] == 200
    assert pipeline.run_stage("fake-a", run, preset="tiny")["value"] == 50


def test_artifact_records_the_contract_attributes(fake_pipeline, run):
    pipeline.run_stage("fake-a", run)
    attrs = artifacts.read_attrs(run, "fake_a")
    for key in ("schema", "schema_version", "producer", "talkctl_version", "created", "config", "inputs",
                "fingerprint", "backend", "seconds", "peak_rss_mb"):
        assert key in attrs, key
    assert attrs["schema"] == "talkctl.fake_a" and attrs["producer"] == "fake-a v1"
    assert json.loads(attrs["inputs"]) == {"video": run.video()[1]}
    assert json.loads(attrs["config"]) == {"scale": 1.0}
    assert 10 < attrs["peak_rss_mb"] < 24 * 1024  # this stage's peak host memory, MiB


def test_downstream_goes_stale_when_upstream_changes(fake_pipeline, run, tmp_path):
    pipeline.run_stage("fake-a", run)
    pipeline.run_stage("fake-b", run)
    states = {r["artifact"]: r["state"] for r in pipeline.status(run)}
    assert states == {"a.h5": "done", "b.h5": "done"}
    pipeline.run_stage("fake-a", run, overrides={"scale": 3.0})
    rows = {r["artifact"]: r for r in pipeline.status(run)}
    assert rows["b.h5"]["state"] == "stale" and "fake_a changed" in rows["b.h5"]["why"]
    with pytest.raises(ArtifactError, match=r"fake-a \(a.h5 stale: input video changed\).*--to fake-a"):
        # a stale input is refused by a stage that reads it ... once a is itself stale
        (tmp_path / "clip.bin").write_bytes(b"y" * 7)
        pipeline.run_stage("fake-b", run)


def test_changed_video_makes_first_stage_stale_and_rerun_rebuilds(fake_pipeline, run, tmp_path):
    pipeline.run_stage("fake-a", run)
    (tmp_path / "clip.bin").write_bytes(b"z" * 10)
    run.set_video(tmp_path / "clip.bin")
    assert {r["artifact"]: r["state"] for r in pipeline.status(run)}["a.h5"] == "stale"
    assert pipeline.run_stage("fake-a", run)["value"] == 10


def test_missing_input_names_the_stage_to_run(fake_pipeline, run):
    with pytest.raises(ArtifactError, match=r"fake-a \(a\.h5 missing\); build them with `talkctl run .* --to fake-a`"):
        pipeline.run_stage("fake-b", run)


@pytest.mark.parametrize("fail,exc", [("error", RuntimeError), ("interrupt", KeyboardInterrupt)])
def test_failed_or_interrupted_write_leaves_nothing(fake_pipeline, run, fail, exc):
    with pytest.raises(exc):
        pipeline.run_stage("fake-a", run, overrides={"fail": fail})
    names = sorted(p.name for p in run.path.iterdir())
    assert "a.h5" not in names and not any(n.endswith(".partial") for n in names)
    assert pipeline.run_stage("fake-a", run)["status"] == "done"  # and it resumes cleanly


def test_leftover_partial_from_a_killed_writer_is_cleaned(fake_pipeline, run):
    (run.path / "a.h5.partial").write_bytes(b"half")
    pipeline.run_stage("fake-a", run)
    assert not (run.path / "a.h5.partial").exists()


def test_wrong_schema_is_refused_with_the_stage_to_rerun(fake_pipeline, run):
    pipeline.run_stage("fake-a", run)
    with h5py.File(run.file("a.h5"), "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(ArtifactError, match=r"v99.*rebuild it with `talkctl fake-a --run "):
        artifacts.open_for_read(run, "fake_a")
    assert {r["artifact"]: r["state"] for r in pipeline.status(run)}["a.h5"] == "invalid"


def test_corrupt_file_is_refused(fake_pipeline, run):
    run.file("a.h5").write_bytes(b"not hdf5")
    with pytest.raises(ArtifactError, match="unreadable"):
        artifacts.open_for_read(run, "fake_a")


def test_lock_refuses_a_second_writer(run):
    entered = threading.Event()
    release = threading.Event()

    def holder():
        with run.lock("talkctl fake-a"):
            entered.set()
            release.wait(5)

    # flock is per open file description, so a second open in another thread conflicts too
    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(5)
    try:
        with pytest.raises(LockedError, match="in use by `talkctl fake-a`"):
            with run.lock("talkctl fake-b"):
                pass
    finally:
        release.set()
        t.join()
    with run.lock("again"):
        pass


def test_run_dir_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot create run directory"):
        RunDir(blocker / "run")
    with pytest.raises(UsageError, match="is a file"):
        RunDir(blocker)
    with pytest.raises(UsageError, match="does not exist"):
        RunDir(tmp_path / "nope", create=False)


def test_chain_bounds(fake_pipeline):
    assert pipeline.chain(None, None) == ["fake-a", "fake-b"]
    assert pipeline.chain("fake-b", None) == ["fake-b"]
    with pytest.raises(UsageError):
        pipeline.chain("fake-b", "fake-a")
