"""fer-analyze on a study: worker processes, a Dask cluster, --resume, study.csv and --group-by."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import cv2
import pytest

from conftest import REPO, footage
from fer_ros.session.batch import default_jobs, worker_threads
from fer_ros.session.completion import MARKER_NAME
from fer_ros.session.data import SessionError
from fer_ros.session.study import condition_order, group_pattern
from fer_ros.session.workers import LocalWorkers, WorkerLost

#: Seconds of footage per session: short, so that the file runs in about two minutes.
CLIP_S = 1.5
#: The four good sessions (name: footage, start second) and the unreadable one.
CLIPS = {"P01_pre": ("WolfgangLanger_Pexels.mp4", 0.0),
         "P01_post": ("WolfgangLanger_Pexels.mp4", 8.0),
         "P02_pre": ("single_face.mp4", 0.0),
         "P02_post": ("WolfgangLanger_Pexels.mp4", 14.0)}
BAD = "P03_pre"
GROUP_BY = r"(?P<participant>P\d+)_(?P<phase>pre|post)"
#: The timing field of summary.json: the only one that may differ between runs.
TIMING = re.compile(r'"processing_s": [^,\n]+')


def cut(source: Path, target: Path, start_s: float) -> None:
    """Write CLIP_S seconds of a video from start_s on (mp4v)."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.set(cv2.CAP_PROP_POS_FRAMES, int(start_s * fps))
    writer = None
    for _ in range(int(CLIP_S * fps)):
        ok, frame = capture.read()
        assert ok, f"{source} ends before {start_s + CLIP_S} s"
        if writer is None:
            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                     (frame.shape[1], frame.shape[0]))
        writer.write(frame)
    writer.release()
    capture.release()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Make a folder of five inputs: four short clips of the footage, one unreadable file."""
    folder = tmp_path_factory.mktemp("study") / "sessions"
    folder.mkdir()
    for name, (source, start_s) in CLIPS.items():
        cut(footage(source), folder / f"{name}.mp4", start_s)
    (folder / f"{BAD}.mp4").write_bytes(b"this is not a video\n" * 50)
    return folder


def run_cli(*args: object) -> subprocess.CompletedProcess:
    """Run fer-analyze from the checkout in its own process."""
    return subprocess.run([sys.executable, "-m", "fer_ros.session.cli", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def check_batch_result(result: subprocess.CompletedProcess) -> None:
    """Four sessions analysed, the bad one reported in one line, exit status 1."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"{BAD}.mp4" in errors[0], result.stderr
    assert "1 of 5 inputs could not be analysed" in result.stderr


def outputs_of(folder: Path) -> Dict[str, bytes]:
    """Each good session's faces.csv and summary.json (timing removed), and study.csv."""
    files = {}
    for name in CLIPS:
        files[f"{name}/faces.csv"] = (folder / name / "faces.csv").read_bytes()
        summary = (folder / name / "summary.json").read_text(encoding="utf-8")
        files[f"{name}/summary.json"] = TIMING.sub("", summary).encode()
    files["study.csv"] = (folder / "study.csv").read_bytes()
    return files


def assert_same_outputs(folder: Path, reference: Path) -> None:
    """Byte-for-byte the same faces.csv, summary.json (except timing) and study.csv."""
    ours, theirs = outputs_of(folder), outputs_of(reference)
    for name in theirs:
        assert ours[name] == theirs[name], f"{name} differs from the --jobs 1 run"


@pytest.fixture(scope="module")
def reference(study, tmp_path_factory) -> Path:
    """Analyse the study with --jobs 1 (one session after another, in one process)."""
    output = tmp_path_factory.mktemp("jobs1") / "out"
    result = run_cli(study, "--output", output, "--jobs", "1", "--no-video", "--quiet",
                     "--group-by", GROUP_BY)
    check_batch_result(result)
    return output


def test_jobs_1_writes_the_study(reference):
    rows = list(csv.DictReader((reference / "study.csv").open(encoding="utf-8")))
    sessions = [row for row in rows if row["scope"] == "session"]
    assert sorted(row["session"] for row in sessions) == sorted(CLIPS)
    assert {(row["participant"], row["phase"]) for row in sessions} == \
        {("P01", "pre"), ("P01", "post"), ("P02", "pre"), ("P02", "post")}
    assert all(row["face_id"] and row["person_id"] for row in rows if row["scope"] == "face")
    groups = list(csv.DictReader((reference / "study_groups.csv").open(encoding="utf-8")))
    assert [row["participant"] for row in groups] == ["P01", "P02", "all"]
    by_id = {row["session"]: float(row["mean_valence"]) for row in sessions}
    p01 = groups[0]
    assert float(p01["mean_valence_post_minus_pre"]) == pytest.approx(
        by_id["P01_post"] - by_id["P01_pre"], abs=1e-5)
    html = (reference / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "Study overview" in html
    assert "id='order-date'" in html and "class='by-date'" in html
    assert f"{BAD}.mp4: not a readable video" in html
    for name in ("study.csv", "study.png", "study_groups.csv", "study_groups.png"):
        assert (reference / name).is_file()
    assert all((reference / name / MARKER_NAME).is_file() for name in CLIPS)


def test_jobs_2_gives_the_same_outputs(study, reference, tmp_path):
    output = tmp_path / "out"
    result = run_cli(study, "--output", output, "--jobs", "2", "--no-video", "--quiet",
                     "--group-by", GROUP_BY)
    check_batch_result(result)
    assert_same_outputs(output, reference)


def test_dask_cluster_gives_the_same_outputs(study, reference, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed", reason="needs requirements-dev.txt")
    # The workers import this checkout's fer_ros, as the command does.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    output = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        result = run_cli(study, "--output", output, "--scheduler", cluster.scheduler_address,
                         "--no-video", "--quiet", "--group-by", GROUP_BY)
    check_batch_result(result)
    assert_same_outputs(output, reference)


def modified(folder: Path) -> Dict[str, int]:
    """Modification time (ns) of each good session's faces.csv."""
    return {name: (folder / name / "faces.csv").stat().st_mtime_ns for name in CLIPS}


def test_resume_after_a_kill_redoes_only_unfinished_sessions(study, reference, tmp_path):
    output = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "fer_ros.session.cli", str(study), "--output", str(output),
         "--jobs", "1", "--no-video", "--quiet"], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(output.glob(f"*/{MARKER_NAME}")):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    complete = {path.parent.name for path in output.glob(f"*/{MARKER_NAME}")}
    assert 1 <= len(complete) < len(CLIPS), "kill the run while sessions are left"
    before = {name: mtime for name, mtime in modified_existing(output).items()}

    result = run_cli(study, "--output", output, "--jobs", "2", "--no-video", "--quiet",
                     "--resume", "--group-by", GROUP_BY)
    check_batch_result(result)
    after = modified(output)
    kept = {line.split(":")[0] for line in result.stdout.splitlines() if "kept" in line}
    assert kept == complete
    for name in CLIPS:
        assert (after[name] == before.get(name)) == (name in complete), name
    assert_same_outputs(output, reference)


def modified_existing(folder: Path) -> Dict[str, int]:
    """Modification times (ns) of the faces.csv files that exist."""
    return {name: (folder / name / "faces.csv").stat().st_mtime_ns for name in CLIPS
            if (folder / name / "faces.csv").is_file()}


def test_resume_checks_the_outputs_and_the_settings(study, reference, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(reference, output)
    damaged = "P02_pre"
    faces = output / damaged / "faces.csv"
    faces.write_bytes(faces.read_bytes()[:200])  # present, but not what was written
    before = modified(output)

    result = run_cli(study, "--output", output, "--jobs", "1", "--no-video", "--quiet",
                     "--resume", "--group-by", GROUP_BY)
    check_batch_result(result)
    after = modified(output)
    assert [name for name in CLIPS if after[name] != before[name]] == [damaged]
    assert_same_outputs(output, reference)

    result = run_cli(study, "--output", output, "--jobs", "1", "--no-video", "--quiet",
                     "--resume", "--every", "2")
    check_batch_result(result)
    assert "kept" not in result.stdout
    changed = modified(output)
    assert all(changed[name] != after[name] for name in CLIPS)
    summary = json.loads((output / "P01_pre" / "summary.json").read_text(encoding="utf-8"))
    assert summary["input"]["selection"]["every"] == 2


@dataclass(frozen=True)
class ToyTask:
    """A task for the worker pool: ``die`` ends its worker process."""

    key: int
    die: bool = False


def toy_task(task: ToyTask, emit, threads):
    """Return the key, or kill this worker process."""
    emit({"task": task.key, "total": 1})
    if task.die:
        os._exit(3)
    time.sleep(0.3)
    return task.key


def test_a_dying_worker_fails_only_its_own_session():
    tasks = [ToyTask(0), ToyTask(1, die=True), ToyTask(2), ToyTask(3)]
    outcomes = dict((task.key, outcome) for task, outcome in
                    LocalWorkers(2, 1, {}).run(toy_task, tasks, lambda event: None))
    assert sorted(outcomes) == [0, 1, 2, 3]
    assert isinstance(outcomes[1], WorkerLost)
    assert [outcomes[key] for key in (0, 2, 3)] == [0, 2, 3]


def test_default_jobs_and_threads():
    assert default_jobs(sessions=20, core_count=16, memory_mb=64_000) == 16
    assert default_jobs(sessions=20, core_count=16, memory_mb=2_000) == 4
    assert default_jobs(sessions=3, core_count=16, memory_mb=None) == 3
    assert default_jobs(sessions=10, core_count=2, memory_mb=100) == 1
    assert worker_threads(requested=2, core_count=2, jobs=2) == 1
    assert worker_threads(requested=2, core_count=2, jobs=1) == 2
    assert worker_threads(requested=2, core_count=16, jobs=4) == 2
    assert worker_threads(requested=1, core_count=1, jobs=4) == 1


def test_group_pattern_and_conditions():
    pattern = group_pattern(GROUP_BY)
    assert condition_order(pattern, "phase", ["post", "pre", "post"]) == ["pre", "post"]
    assert condition_order(group_pattern(r"(?P<phase>\w+)$"), "phase", ["b", "a"]) == \
        ["a", "b"]
    for bad in (r"(P\d+", r"P\d+_(pre|post)"):
        with pytest.raises(SessionError, match="--group-by"):
            group_pattern(bad)


def test_bad_batch_options_are_one_line(study, tmp_path):
    for args in (["--jobs", "0"], ["--group-by", "(unclosed"]):
        result = run_cli(study, "--output", tmp_path / "out", *args)
        lines: List[str] = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    result = run_cli(study, "--output", tmp_path / "out", "--scheduler", "localhost")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "fer-analyze: error: --scheduler wants an address like tcp://HOST:PORT, "
        "got 'localhost'"]
