"""``fer-ros-demo``: run the whole graph on a video, as separate processes over DDS.

Starts ``emotion_recorder``, ``fer`` and ``video_source`` (the graph of
``launch/fer.launch.py``), waits until the video has been published and
the recorder has received the results, stops the nodes, and leaves
``OUTPUT/emotions.jsonl`` and ``OUTPUT/overlay.mp4``.
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
from typing import Dict, List, Optional, Sequence

from fer_ros.graph import DEFAULT_CAMERA_TOPIC, NodeSpec, fer_graph
from fer_ros.video_io import FrameSource, SourceError

#: How long the nodes may take to start and discover each other, seconds.
STARTUP_TIMEOUT_S = 90.0
#: The recording is complete once no new record arrived for this long, seconds.
QUIET_PERIOD_S = 2.0


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
                                   env=node_environment())
        self.processes[spec.name] = process
        return process

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
        if not self._wait_for(ready.exists, "the fer node and the recorder to connect"):
            return 1
        video_source = self.start(nodes["video_source"], {
            "source": str(self.video), "wait_for_subscribers": 1, "frame_id": "camera",
            "wait_for_results": self.lockstep})
        print(f"fer-ros-demo: publishing {frames} frames of {self.video.name} at "
              f"{fps:.1f} fps", flush=True)
        if video_source.wait() != 0:
            print(f"fer-ros-demo: error: video_source failed (see {self.output}/logs)",
                  file=sys.stderr)
            return 1
        self._wait_quiet(self.output / "emotions.jsonl")
        return 0

    def _wait_for(self, condition, what: str) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not condition():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    print(f"fer-ros-demo: error: {name} exited with code "
                          f"{process.returncode} (see {self.output}/logs/{name}.log)",
                          file=sys.stderr)
                    return False
            if time.monotonic() > deadline:
                print(f"fer-ros-demo: error: timed out waiting for {what}", file=sys.stderr)
                return False
            time.sleep(0.05)
        return True

    @staticmethod
    def _wait_quiet(path: Path) -> None:
        last, since = count_lines(path), time.monotonic()
        while time.monotonic() - since < QUIET_PERIOD_S:
            time.sleep(0.2)
            now = count_lines(path)
            if now != last:
                last, since = now, time.monotonic()

    def stop(self) -> None:
        """Interrupt every node still running, then wait for it."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for name, process in self.processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def summarise(path: Path) -> Dict[str, object]:
    """Count records, faces per record and face ids in an emotions.jsonl."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ids = sorted({e["face_id"] for r in records for e in r["emotions"]})
    return {"records": len(records),
            "records_with_one_face": sum(len(r["emotions"]) == 1 for r in records),
            "records_without_faces": sum(not r["emotions"] for r in records),
            "face_ids": ids}


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
    args.output.mkdir(parents=True, exist_ok=True)
    extra = {"model": args.model} if args.model else {}
    demo = DemoRun(args.video, args.output, params_file, extra, args.camera_topic,
                   lockstep=not args.realtime)
    try:
        code = demo.run()
    except KeyboardInterrupt:
        code = 130
    finally:
        demo.stop()
    jsonl = args.output / "emotions.jsonl"
    if code == 0 and jsonl.is_file():
        summary = summarise(jsonl)
        print(f"fer-ros-demo: {summary['records']} EmotionArray records, "
              f"{summary['records_with_one_face']} with one face, face ids "
              f"{summary['face_ids']}; wrote {jsonl} and {args.output / 'overlay.mp4'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
