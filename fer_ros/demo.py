"""``fer-ros-demo``: run the whole graph on a video, as separate processes over DDS.

Starts ``emotion_recorder``, ``fer`` and ``video_source`` (the graph of
``launch/fer.launch.py``), waits until the video has been published and
the recorder has received the results, stops the nodes, and leaves
``OUTPUT/emotions.jsonl`` and ``OUTPUT/overlay.mp4``.

The demo supervises its nodes: one that exits early ends the run with a
line naming it and its exit code (exit status 1); SIGINT and SIGTERM stop
every node cleanly (the recorder closes its files, so they stay valid);
the children also get SIGTERM if the demo itself is killed.  The final
line reports only what the files really hold.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Callable, Dict, List, Optional, Sequence

from fer_ros.graph import DEFAULT_CAMERA_TOPIC, NodeSpec, fer_graph
from fer_ros.video_io import FrameSource, SourceError

#: How long the nodes may take to start and discover each other, seconds.
STARTUP_TIMEOUT_S = 90.0
#: The recording is complete once no new record arrived for this long, seconds.
QUIET_PERIOD_S = 2.0
#: How often the node processes are checked, seconds.
POLL_PERIOD_S = 0.05
#: Seconds a node has to stop after SIGINT before it is killed.
STOP_TIMEOUT_S = 15.0


class NodeExited(RuntimeError):
    """A node process ended before the run was over."""


class Terminated(Exception):
    """The demo received SIGTERM (from ``timeout``, systemd, ``kill``)."""


def _raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
    raise Terminated()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the demo dies (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def ros_args(parameters: Dict[str, object], remappings: Dict[str, str],
             params_file: Optional[Path] = None) -> List[str]:
    """``--ros-args`` for a node process."""
    args = ["--ros-args"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    for key, value in parameters.items():
        text = json.dumps(value) if isinstance(value, (bool, str)) else repr(value)
        args += ["-p", f"{key}:={text}"]
    for source, target in remappings.items():
        args += ["-r", f"{source}:={target}"]
    return args


def package_config(name: str) -> Optional[Path]:
    """Find a file of config/ in the installed package, or in this checkout."""
    for candidate in (Path(sys.prefix) / "share/fer_ros/config" / name,
                      Path(__file__).resolve().parent.parent / "config" / name):
        if candidate.is_file():
            return candidate
    return None


def default_params_file() -> Optional[Path]:
    """config/fer.yaml of the installed package, or of this checkout."""
    return package_config("fer.yaml")


def node_environment() -> Dict[str, str]:
    """Environment of the node processes: large images over shared memory.

    Uses config/fastdds_large_images.xml unless the user chose a Fast DDS
    profile already (FASTDDS_DEFAULT_PROFILES_FILE).
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    profile = package_config("fastdds_large_images.xml")
    if profile is not None and "FASTDDS_DEFAULT_PROFILES_FILE" not in env:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return env


def count_lines(path: Path) -> int:
    """Lines in a file (0 if missing)."""
    try:
        with open(path, "rb") as stream:
            return sum(1 for _ in stream)
    except OSError:
        return 0


class DemoRun:
    """Start, watch and stop the node processes of one demo run."""

    def __init__(self, video: Path, output: Path, params_file: Optional[Path],
                 extra_parameters: Dict[str, object], camera_topic: str,
                 lockstep: bool = True) -> None:
        self.video, self.output = video, output
        self.params_file = params_file
        self.extra = extra_parameters
        self.camera_topic = camera_topic
        self.lockstep = lockstep
        self.processes: Dict[str, subprocess.Popen] = {}

    def start(self, spec: NodeSpec, parameters: Dict[str, object],
              params_file: Optional[Path] = None) -> subprocess.Popen:
        """Start one node as a child process with its log in OUTPUT/logs."""
        log_dir = self.output / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"{spec.name}.log", "w")
        command = [sys.executable, "-m", spec.module] + ros_args(
            parameters, spec.remappings, params_file)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=node_environment(), preexec_fn=_die_with_parent)
        self.processes[spec.name] = process
        return process

    def check_nodes(self, finished: Sequence[str] = ()) -> None:
        """Raise :class:`NodeExited` for any node that ended, except those in ``finished``.

        ``finished`` names nodes allowed to end with exit code 0 (the video
        source, once its video is published).
        """
        for name, process in self.processes.items():
            code = process.poll()
            if code is None or (name in finished and code == 0):
                continue
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise NodeExited(f"the {name} node {how} (see {self.output}/logs/{name}.log)")

    def run(self) -> int:
        """Run the graph on the video; return the exit code."""
        source = FrameSource(str(self.video))
        fps, frames = source.frame_rate, source.frame_count
        source.close()
        nodes = {spec.name: spec for spec in fer_graph(self.camera_topic)}
        ready = self.output / "logs" / "recorder.ready"
        ready.unlink(missing_ok=True)
        self.start(nodes["emotion_recorder"], {
            "output_dir": str(self.output), "overlay_fps": fps, "ready_file": str(ready)})
        fer_parameters = dict(self.extra)
        if self.lockstep:
            # Lockstep replay must not lose frames: override the camera
            # subscription's best-effort QoS (large images are fragmented and
            # best effort drops fragments on a loaded machine).
            fer_parameters[f"qos_overrides.{self.camera_topic}.subscription.reliability"] \
                = "reliable"
        self.start(nodes["fer"], fer_parameters, self.params_file)
        self._wait_for(ready.exists, "the fer node and the recorder to connect",
                       STARTUP_TIMEOUT_S)
        video_source = self.start(nodes["video_source"], {
            "source": str(self.video), "wait_for_subscribers": 1, "frame_id": "camera",
            "wait_for_results": self.lockstep})
        print(f"fer-ros-demo: publishing {frames} frames of {self.video.name} at "
              f"{fps:.1f} fps", flush=True)
        self._wait_for(lambda: video_source.poll() == 0, "the video to be published", None,
                       finished=("video_source",))
        self._wait_quiet(self.output / "emotions.jsonl")
        return 0

    def _wait_for(self, condition: Callable[[], bool], what: str,
                  timeout_s: Optional[float], finished: Sequence[str] = ()) -> None:
        """Wait until ``condition()`` while every node runs.

        :raises NodeExited: when a node ends first; TimeoutError after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not condition():
            self.check_nodes(finished)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(POLL_PERIOD_S)

    def _wait_quiet(self, path: Path) -> None:
        """Wait until no record arrived for QUIET_PERIOD_S, while the nodes run."""
        last, since = count_lines(path), time.monotonic()
        while time.monotonic() - since < QUIET_PERIOD_S:
            self.check_nodes(finished=("video_source",))
            time.sleep(0.2)
            now = count_lines(path)
            if now != last:
                last, since = now, time.monotonic()

    def stop(self) -> None:
        """Interrupt every node still running (SIGINT: they close their files), then wait."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def summarise(path: Path) -> Dict[str, object]:
    """Count the complete records, faces per record and face ids in an emotions.jsonl.

    A line that is not a complete JSON record (a recorder killed mid-write)
    is not counted.
    """
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    records = [r for r in records if isinstance(r, dict) and isinstance(r.get("emotions"), list)]
    ids = sorted({e.get("face_id") for r in records for e in r["emotions"]
                  if isinstance(e, dict)})
    return {"records": len(records),
            "records_with_one_face": sum(len(r["emotions"]) == 1 for r in records),
            "records_without_faces": sum(not r["emotions"] for r in records),
            "face_ids": ids}


def video_frames(path: Path) -> int:
    """Frames that can be read back from a video file (0 if missing or unplayable)."""
    import cv2

    if not path.is_file():
        return 0
    capture = cv2.VideoCapture(str(path))
    try:
        frames = 0
        while capture.isOpened() and capture.grab():
            frames += 1
        return frames
    finally:
        capture.release()


def written_line(output: Path) -> str:
    """Return the demo's final line: what the output files really hold."""
    jsonl, overlay = output / "emotions.jsonl", output / "overlay.mp4"
    summary = summarise(jsonl) if jsonl.is_file() else {"records": 0}
    parts = [f"fer-ros-demo: {summary['records']} EmotionArray records"]
    if summary["records"]:
        parts[0] += (f", {summary['records_with_one_face']} with one face, face ids "
                     f"{summary['face_ids']}")
    written = [str(jsonl)] if summary["records"] else []
    frames = video_frames(overlay)
    if frames:
        written.append(f"{overlay} ({frames} frames)")
    parts.append(f"wrote {' and '.join(written)}" if written else "wrote nothing")
    return "; ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="fer-ros-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, type=Path, help="video file to play")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--params-file", type=Path, default=None,
                        help="fer node parameters (default: the package's config/fer.yaml)")
    parser.add_argument("--model", default=None, help="static model: 3class, 7class or a path")
    parser.add_argument("--camera-topic", default=DEFAULT_CAMERA_TOPIC)
    parser.add_argument("--realtime", action="store_true",
                        help="publish at the video's rate and let the fer node drop "
                             "frames it cannot keep up with (default: lockstep replay, "
                             "every frame processed)")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        print(f"fer-ros-demo: error: {args.video}: no such file", file=sys.stderr)
        return 2
    try:
        FrameSource(str(args.video)).close()
    except SourceError as error:
        print(f"fer-ros-demo: error: {error}", file=sys.stderr)
        return 2
    params_file = args.params_file or default_params_file()
    if params_file is not None and not params_file.is_file():
        print(f"fer-ros-demo: error: {params_file}: no such file", file=sys.stderr)
        return 2
    args.output.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: see Privacy
    extra = {"model": args.model} if args.model else {}
    demo = DemoRun(args.video, args.output, params_file, extra, args.camera_topic,
                   lockstep=not args.realtime)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = demo.run()
    except (NodeExited, TimeoutError) as error:
        print(f"fer-ros-demo: error: {error}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("fer-ros-demo: interrupted; stopping the nodes", file=sys.stderr)
        code = 130
    except Terminated:
        print("fer-ros-demo: terminated; stopping the nodes", file=sys.stderr)
        code = 143
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut stop()
        demo.stop()
        signal.signal(signal.SIGTERM, previous)
    print(written_line(args.output), file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
