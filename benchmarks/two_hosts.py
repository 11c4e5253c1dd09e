"""Camera on one host, inference on another: the fer_ros graph across a network link.

    sudo .venv/bin/python benchmarks/two_hosts.py [--scenarios ...] [--update-readme]

Two Linux network namespaces joined by a veth pair stand for two hosts on
one Ethernet link (MTU 1500, so large datagrams are IP-fragmented as on a
real network): ``video_source`` publishes footage as 640x480 frames at
30 fps in the camera namespace (10.77.0.1), the fer node, the
emotion_recorder and a result recorder run in the inference namespace
(10.77.0.2), and DDS discovers and carries everything over UDP.  For each
scenario it prints the share of published frames the fer node processed
(and how many crossed the link at all), the latency from the image stamp to
the EmotionArray's receipt in the inference namespace (both namespaces
share one clock), and the bytes on the link per frame and per second.

Scenarios (all in one run; ratios against the first, the peer):

- ``raw-defaults``: sensor_msgs/Image with Fast DDS's default UDP transport
  (``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``; its shared memory would let the
  namespaces bypass the link);
- ``raw-profile``: config/fastdds_udp_large_images.xml, under this host's
  caps on socket buffers (net.core.rmem_max / wmem_max, printed; they are
  per host: read-only inside a network namespace, so the script leaves them
  as they are);
- ``raw-profile-capped``: the profile as Ubuntu's default caps (212992)
  would cut it, i.e. the sysctl forgotten: a copy asking for 212992-byte
  buffers, which the kernel grants exactly as it grants the profile's
  sizes under those caps;
- ``compressed-profile``: ``image_transport: compressed`` (jpeg quality 90).

It also runs the pipeline on the same frames raw and after a jpeg round
trip (no smoothing, no CNN-LSTM) and counts how often the label agrees.

Needs root and ``ip netns``.  test/test_two_hosts.py uses :class:`TwoHosts`
and :func:`run_graph` from here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bench_common import cpu_model, replace_readme_section

REPO = Path(__file__).resolve().parent.parent
#: The Fast DDS profile for images between hosts.
PROFILE = REPO / "config" / "fastdds_udp_large_images.xml"
#: The hosts' addresses are in <NETWORK>.0.0/16 (/24 subnets).
NETWORK = "10.77"
#: Ubuntu's default caps on socket buffers, bytes (the sysctl forgotten).
DEFAULT_SOCKET_BUFFER_MAX = 212_992
#: Publishing rate, frames/s, and frame size, pixels.
FPS = 30.0
SIZE = (640, 480)
#: Footage: one face, 472 frames (about 16 s at 30 fps).
BENCHMARK_VIDEO = "WolfgangLanger_Pexels.mp4"
#: video_source's default jpeg quality, compared with raw frames.
JPEG_QUALITY = 90
#: A run ends once no result came for this long after the source finished, seconds.
QUIET_S = 2.0
#: Longest wait for the inference side to start (models load), seconds.
START_TIMEOUT_S = 60.0
#: The benchmark's scenarios: name -> (image transport, profile: none, as is, capped).
SCENARIOS = {
    "raw-defaults": ("raw", "none"),
    "raw-profile": ("raw", "profile"),
    "raw-profile-capped": ("raw", "capped"),
    "compressed-profile": ("compressed", "profile"),
}
PEER_SCENARIO = "raw-defaults"


def footage(name: str) -> Path:
    """Return a footage file installed by tools/setup.sh, else from ../shared/media."""
    for folder in (Path(sys.prefix) / "share" / "fer_ros" / "footage",
                   REPO.parent / "shared" / "media"):
        if (folder / name).is_file():
            return folder / name
    raise SystemExit(f"footage {name} is missing (tools/setup.sh installs it)")


def socket_buffer_caps() -> Dict[str, int]:
    """Return this host's net.core.rmem_max and wmem_max, bytes."""
    return {name: int(Path(f"/proc/sys/net/core/{name}").read_text())
            for name in ("rmem_max", "wmem_max")}


def capped_profile(folder: Path) -> Path:
    """Write the profile as Ubuntu's default caps would cut it; return its path."""
    text = PROFILE.read_text()
    for tag in ("receiveBufferSize", "sendBufferSize"):
        head, rest = text.split(f"<{tag}>", 1)
        text = head + f"<{tag}>{DEFAULT_SOCKET_BUFFER_MAX}</{tag}>" + rest.split(f"</{tag}>", 1)[1]
    path = folder / "fastdds_udp_capped.xml"
    path.write_text(text)
    return path


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def namespaces_unavailable() -> Optional[str]:
    """Return why network namespaces cannot be created here, or None if they can."""
    if platform.system() != "Linux":
        return f"network namespaces need Linux, not {platform.system()}"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (ip netns)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"fer-probe-{os.getpid()}"
    created = _ip("netns", "add", probe)
    _ip("netns", "del", probe)
    if created.returncode != 0:
        return f"'ip netns add' fails here: {created.stderr.strip()}"
    return None


class TwoHosts:
    """Two network namespaces standing for two hosts: a camera host and an inference host.

    ``with TwoHosts("x1") as hosts:`` creates them and removes them on exit,
    on failure too (every process still running in them is killed first).
    By default one veth pair joins them on one subnet (10.77.0.1 and
    10.77.0.2), where DDS discovery works over multicast as on one Ethernet
    segment.  With ``routed`` a third namespace routes between two subnets
    (camera 10.77.1.1, inference 10.77.2.1): Linux does not route multicast,
    so discovery must name the other host (ROS_STATIC_PEERS), as between a
    robot on WiFi and a workstation on a wired subnet, or on networks that
    block multicast.

    :param tag: short unique part of the names (namespaces ``fer-<tag>-camera``,
        ``fer-<tag>-inference`` and ``fer-<tag>-router``; links ``fc<tag>``,
        ``fi<tag>`` and the router's ``rc<tag>``, ``ri<tag>``).
    :param routed: two subnets and a router instead of one subnet.
    """

    def __init__(self, tag: str, routed: bool = False) -> None:
        self.camera = f"fer-{tag}-camera"
        self.inference = f"fer-{tag}-inference"
        self.router = f"fer-{tag}-router" if routed else None
        self.link = {self.camera: f"fc{tag}"[:15], self.inference: f"fi{tag}"[:15]}
        if routed:
            self.address = {self.camera: f"{NETWORK}.1.1", self.inference: f"{NETWORK}.2.1"}
        else:
            self.address = {self.camera: f"{NETWORK}.0.1", self.inference: f"{NETWORK}.0.2"}

    @property
    def namespaces(self) -> List[str]:
        """Return every namespace of the set-up."""
        return [self.camera, self.inference] + ([self.router] if self.router else [])

    def __enter__(self) -> "TwoHosts":
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check(self, *args: str) -> None:
        result = _ip(*args)
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")

    def _veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        self._check("link", "add", "name", name_a, "netns", ns_a, "type", "veth",
                    "peer", "name", name_b, "netns", ns_b)

    def _up(self, ns: str, link: str, address: str) -> None:
        self._check("-n", ns, "addr", "add", address, "dev", link)
        self._check("-n", ns, "link", "set", link, "up")

    def _create(self) -> None:
        for ns in self.namespaces:
            self._check("netns", "add", ns)
            self._check("-n", ns, "link", "set", "lo", "up")
        if self.router is None:
            self._veth(self.camera, self.link[self.camera],
                       self.inference, self.link[self.inference])
            for ns in (self.camera, self.inference):
                self._up(ns, self.link[ns], f"{self.address[ns]}/24")
                # Discovery multicast (239.255.0.1) leaves by the link: without
                # a route for it a namespace may have none (no default route).
                self._check("-n", ns, "route", "add", "224.0.0.0/4", "dev", self.link[ns])
            return
        for ns in (self.camera, self.inference):
            side = self.link[ns]
            router_link = "r" + side[1:]
            gateway = self.address[ns].rsplit(".", 1)[0] + ".254"
            self._veth(ns, side, self.router, router_link)
            self._up(ns, side, f"{self.address[ns]}/24")
            self._up(self.router, router_link, f"{gateway}/24")
            self._check("-n", ns, "route", "add", f"{NETWORK}.0.0/16", "via", gateway)
        forward = subprocess.run(self.command(self.router, [
            "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]),
            capture_output=True, text=True, timeout=30)
        if forward.returncode != 0:
            raise RuntimeError(f"cannot enable forwarding in {self.router}: {forward.stderr}")

    def receive_buffer(self, ns: str) -> Optional[int]:
        """Return the largest receive buffer of the UDP sockets in ``ns``, bytes (``ss``'s rb).

        What the kernel granted Fast DDS (twice the size asked for, at most
        twice net.core.rmem_max); None without ``ss``.
        """
        if shutil.which("ss") is None:
            return None
        text = subprocess.run(self.command(ns, ["ss", "-uamn"]), capture_output=True,
                              text=True, timeout=30).stdout
        sizes = [int(part[2:]) for part in text.replace("(", ",").replace(")", ",").split(",")
                 if part.startswith("rb") and part[2:].isdigit()]
        return max(sizes) if sizes else None

    def command(self, ns: str, argv: Sequence[str]) -> List[str]:
        """Return ``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]

    def link_bytes(self, ns: str) -> Dict[str, int]:
        """Return the bytes received and sent so far on ``ns``'s link."""
        result = _ip("-j", "-s", "-n", ns, "link", "show", "dev", self.link[ns])
        stats = json.loads(result.stdout)[0]["stats64"]
        return {"rx": stats["rx"]["bytes"], "tx": stats["tx"]["bytes"]}

    def close(self) -> None:
        """Kill what still runs in the namespaces, then delete them (and the link)."""
        for ns in self.namespaces:
            pids = _ip("netns", "pids", ns).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", ns)


@dataclass
class GraphRun:
    """What one run of the graph across the two hosts gave.

    :param transport: ``raw`` or ``compressed``.
    :param published: frames video_source published.
    :param results: image stamps of the EmotionArrays in emotions.jsonl, seconds.
    :param received: stamp -> receipt time in the inference namespace (only with
        ``measure_latency``), seconds.
    :param faces: faces per EmotionArray, in emotions.jsonl's order.
    :param link_rx: bytes the inference host received on the link while the
        source ran (frames, discovery, acknowledgements).
    :param link_tx: bytes it sent (results, discovery).
    :param receive_buffer: largest socket receive buffer granted on the
        inference host, bytes.
    :param diagnostics: the fer node's last diagnostics values.
    :param exit_codes: every process's exit code, by name.
    :param output: folder with emotions.jsonl, overlay.mp4 and every process's log.
    """

    transport: str
    published: int
    results: List[float]
    received: Dict[float, float]
    faces: List[int]
    link_rx: int
    link_tx: int
    receive_buffer: Optional[int]
    diagnostics: Dict[str, str]
    exit_codes: Dict[str, Optional[int]]
    output: Path
    notes: List[str] = field(default_factory=list)

    def logs(self) -> str:
        """Return the tail of every process's log, for failure messages."""
        return "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}"
                         for log in sorted(self.output.glob("*.log")))


def graph_environment(profile: Optional[Path], domain: int,
                      static_peers: Optional[str] = None) -> Dict[str, str]:
    """Return the environment of the graph's processes on one host.

    :param profile: Fast DDS profile file, or None for Fast DDS's defaults
        restricted to UDP (``FASTDDS_BUILTIN_TRANSPORTS=UDPv4``).
    :param static_peers: the other host's address for ROS_STATIC_PEERS
        (unicast discovery), or None for multicast discovery.
    """
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="SUBNET",
               PYTHONUNBUFFERED="1")
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS",
                 "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY"):
        env.pop(name, None)
    if profile is not None:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    else:
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "UDPv4"
    if static_peers:
        # SUBNET (kept): multicast still finds the nodes on the same host,
        # unicast to the peer finds the other host.  LOCALHOST would add
        # rmw_fastrtps' own SHM and UDP transports next to the profile's,
        # and every frame crossed the link twice.
        env["ROS_STATIC_PEERS"] = static_peers
    return env


def _start(hosts: TwoHosts, ns: str, name: str, argv: Sequence[str], env: Dict[str, str],
           output: Path) -> subprocess.Popen:
    log = open(output / f"{name}.log", "w")
    try:
        # Run from the output folder: the installed fer_ros (with its
        # generated messages), not the checkout's.
        return subprocess.Popen(hosts.command(ns, argv), env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=output)
    finally:
        log.close()


def _stop(process: subprocess.Popen, timeout: float = 15.0) -> Optional[int]:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode


def _wait_for_file(path: Path, processes: Dict[str, subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the inference host was not ready after {timeout:.0f} s")
        time.sleep(0.05)


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            pass
    return records


def run_graph(hosts: TwoHosts, output: Path, *, transport: str = "raw",
              profile: Optional[Path] = PROFILE, video: Optional[Path] = None,
              lockstep: bool = False, overlay: bool = False, measure_latency: bool = False,
              domain: int = 210, static_peers: bool = False,
              timeout: float = 120.0) -> GraphRun:
    """Run video_source on the camera host and the fer node plus recorders on the inference host.

    :param output: folder for emotions.jsonl, overlay.mp4 and the logs.
    :param transport: video_source's and the fer node's ``image_transport``.
    :param profile: Fast DDS profile of every process, or None (Fast DDS's
        default UDP transport).
    :param lockstep: video_source's ``wait_for_results`` (every frame processed).
    :param overlay: the recorder records the overlay too (a large image over
        the inference host's loopback).
    :param measure_latency: also run a recorder of receipt times.
    :param domain: ROS_DOMAIN_ID of the graph.
    :param static_peers: discover through ROS_STATIC_PEERS (each host names
        the other) instead of multicast.
    :param timeout: longest run of the source, seconds.
    """
    output.mkdir(parents=True, exist_ok=True)
    video = video or footage(BENCHMARK_VIDEO)
    env = {ns: graph_environment(profile, domain, static_peers=hosts.address[other]
                                 if static_peers else None)
           for ns, other in ((hosts.camera, hosts.inference), (hosts.inference, hosts.camera))}
    python = sys.executable
    ready = output / "recorder.ready"
    inference = {
        "fer_node": _start(hosts, hosts.inference, "fer_node", [
            python, "-m", "fer_ros.nodes.fer_node", "--ros-args",
            "-p", f"image_transport:={transport}"], env[hosts.inference], output),
        "emotion_recorder": _start(hosts, hosts.inference, "emotion_recorder", [
            python, "-m", "fer_ros.nodes.emotion_recorder", "--ros-args",
            "-p", f"output_dir:={output}", "-p", f"ready_file:={ready}",
            "-p", "overlay_topic:=" + ("fer/overlay" if overlay else "''")],
            env[hosts.inference], output)}
    latency_ready = output / "latency.ready"
    if measure_latency:
        inference["latency_recorder"] = _start(hosts, hosts.inference, "latency_recorder", [
            python, str(Path(__file__).resolve()), "--worker", str(output / "latency.jsonl"),
            str(latency_ready)], env[hosts.inference], output)
    processes = dict(inference)
    exit_codes: Dict[str, Optional[int]] = {}
    try:
        _wait_for_file(ready, processes, START_TIMEOUT_S)
        if measure_latency:
            _wait_for_file(latency_ready, processes, START_TIMEOUT_S)
        receive_buffer = hosts.receive_buffer(hosts.inference)
        before = hosts.link_bytes(hosts.inference)
        source = _start(hosts, hosts.camera, "video_source", [
            python, "-m", "fer_ros.nodes.video_source", "--ros-args",
            "-p", f"source:={video}", "-p", f"width:={SIZE[0]}", "-p", f"height:={SIZE[1]}",
            "-p", f"frame_rate:={FPS}", "-p", f"image_transport:={transport}",
            "-p", "wait_for_subscribers:=1", "-p", "wait_timeout_s:=90.0",
            "-p", f"wait_for_results:={str(lockstep).lower()}"],
            env[hosts.camera], output)
        processes["video_source"] = source
        try:
            exit_codes["video_source"] = source.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            exit_codes["video_source"] = _stop(source)
        after = hosts.link_bytes(hosts.inference)
        published = _published_frames(output / "video_source.log")
        # The last results may still be on their way: wait until none comes.
        count, last_change = -1, time.monotonic()
        while time.monotonic() - last_change < QUIET_S:
            now = len(_read_jsonl(output / "emotions.jsonl"))
            if now != count:
                count, last_change = now, time.monotonic()
            if count >= published:
                break
            time.sleep(0.1)
    finally:
        for name, process in processes.items():
            if name not in exit_codes:
                exit_codes[name] = _stop(process)
    records = _read_jsonl(output / "emotions.jsonl")
    received: Dict[float, float] = {}
    diagnostics: Dict[str, str] = {}
    for record in _read_jsonl(output / "latency.jsonl"):
        if "diagnostics" in record:
            diagnostics = record["diagnostics"]
        else:
            received.setdefault(record["stamp"], record["received"])
    return GraphRun(transport, published, [r["stamp"] for r in records], received,
                    [len(r.get("emotions", [])) for r in records],
                    after["rx"] - before["rx"], after["tx"] - before["tx"], receive_buffer,
                    diagnostics, exit_codes, output)


def _published_frames(log: Path) -> int:
    """Return the frame count of video_source's 'source finished after N frames' line."""
    for line in reversed(log.read_text().splitlines()):
        if "source finished after" in line:
            return int(line.split("source finished after", 1)[1].split()[0])
    return 0


def record_latency(path: str, ready: str) -> int:
    """Worker: write each EmotionArray's stamp and receipt time, and the fer node's diagnostics.

    Runs in the inference namespace until SIGINT.
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from fer_ros.msg import EmotionArray
    from fer_ros.nodes.messages import stamp_to_seconds

    rclpy.init()
    node = rclpy.create_node("two_hosts_latency_recorder")
    out = open(path, "w")

    def on_result(msg: Any) -> None:
        now = node.get_clock().now().nanoseconds * 1e-9
        out.write(json.dumps({"stamp": stamp_to_seconds(msg.header.stamp), "received": now,
                              "faces": len(msg.emotions)}) + "\n")

    def on_diagnostics(msg: Any) -> None:
        for status in msg.status:
            if "fer" in status.name and any(kv.key == "received" for kv in status.values):
                out.write(json.dumps({"diagnostics": {kv.key: kv.value
                                                      for kv in status.values}}) + "\n")

    node.create_subscription(EmotionArray, "emotions", on_result,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    try:
        while node.count_publishers("emotions") == 0:
            rclpy.spin_once(node, timeout_sec=0.05)
        Path(ready).touch()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        out.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def summary(runs: Sequence[GraphRun]) -> Dict[str, Any]:
    """Return the figures of a scenario's runs: medians over runs, latencies pooled.

    :param runs: one or more runs of the same scenario.
    """
    latencies = sorted((run.received[s] - s) * 1e3 for run in runs
                       for s in run.results if s in run.received)
    shares = [len(run.results) / max(1, run.published) for run in runs]
    arrived = [int(run.diagnostics["received"]) / max(1, run.published) for run in runs
               if "received" in run.diagnostics]
    seconds = sum(run.published for run in runs) / FPS
    link_rx, link_tx = sum(run.link_rx for run in runs), sum(run.link_tx for run in runs)
    return {
        "transport": runs[0].transport, "runs": len(runs),
        "published": [run.published for run in runs],
        "processed": [len(run.results) for run in runs],
        "processed_share": round(statistics.median(shares), 3),
        "processed_share_range": [round(min(shares), 3), round(max(shares), 3)],
        "arrived_share": round(statistics.median(arrived), 3) if arrived else None,
        "latency_ms": {"median": round(statistics.median(latencies), 1),
                       "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1)}
        if latencies else None,
        "receive_buffer": runs[0].receive_buffer,
        "link_bytes_per_frame": round(link_rx / max(1, seconds * FPS)),
        "link_mbit_per_s": round(link_rx * 8 / max(seconds, 1e-9) / 1e6, 1),
        "return_kbit_per_s": round(link_tx * 8 / max(seconds, 1e-9) / 1e3, 1),
        "exit_codes": [run.exit_codes for run in runs],
    }


def jpeg_agreement(video: Path, step: int = 2) -> Dict[str, Any]:
    """Compare the pipeline's results on raw frames and on the same frames as jpeg.

    :param step: use every ``step``-th frame of ``video``.
    """
    import numpy as np

    from fer_ros.image_conversion import bgr_to_compressed_fields, compressed_msg_to_bgr
    from fer_ros.pipeline import build_pipeline
    from fer_ros.video_io import FrameSource

    source = FrameSource(str(video), SIZE)
    frames = [frame.image for frame in source.frames()][::step]
    source.close()
    encode_ms, sizes, labels = [], [], {}
    for kind in ("raw", "jpeg"):
        pipeline, _ = build_pipeline({"smoothing_time_constant_s": 0.0, "dynamic_model": "none"})
        labels[kind] = []
        for index, image in enumerate(frames):
            if kind == "jpeg":
                start = time.perf_counter()
                fields = bgr_to_compressed_fields(image, "jpeg", JPEG_QUALITY)
                encode_ms.append((time.perf_counter() - start) * 1e3)
                sizes.append(len(fields["data"]))
                image = compressed_msg_to_bgr(argparse.Namespace(**fields))
            result = pipeline.process(image, index * step / FPS)
            labels[kind].append([(face.frame_label, face.probabilities) for face in result.faces])
    pairs = [(raw[0], jpeg[0]) for raw, jpeg in zip(labels["raw"], labels["jpeg"])
             if len(raw) == len(jpeg) == 1]
    differences = [float(np.abs(raw[1] - jpeg[1]).max()) for raw, jpeg in pairs]
    return {"quality": JPEG_QUALITY, "frames": len(frames), "one_face_in_both": len(pairs),
            "same_label": round(sum(raw[0] == jpeg[0] for raw, jpeg in pairs)
                                / max(1, len(pairs)), 3),
            "probability_difference": {"median": round(float(np.median(differences)), 4),
                                       "p95": round(float(np.percentile(differences, 95)), 4)}
            if differences else None,
            "faces": {"raw": sum(map(len, labels["raw"])), "jpeg": sum(map(len, labels["jpeg"]))},
            "encode_ms_median": round(statistics.median(encode_ms), 2),
            "jpeg_bytes_median": round(statistics.median(sizes))}


def machine() -> str:
    """Describe the machine in one line."""
    return f"{cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}"


def table(results: Dict[str, Any]) -> str:
    """Render the results as the README's markdown table plus a header line."""
    peer = results["scenarios"].get(PEER_SCENARIO)
    caps = results["socket_buffer_caps"]
    lines = [f"Measured {results['date']} on {results['machine']}, by `benchmarks/two_hosts.py` "
             f"({results['video']}, {SIZE[0]}x{SIZE[1]} at {FPS:.0f} fps, best effort; "
             f"two network namespaces over a veth pair, MTU 1500; net.core.rmem_max "
             f"{caps['rmem_max']}, wmem_max {caps['wmem_max']}; {results['repeats']} run(s) "
             f"of each scenario, interleaved: medians, the range of the processed share in "
             f"brackets, latencies of all runs pooled).", "",
             "| scenario | processed | reached the fer node | latency ms (median / p95) "
             "| link per frame | link Mbit/s | receive buffer | processed vs peer |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in results["scenarios"].items():
        latency = s["latency_ms"]
        latency_text = f"{latency['median']} / {latency['p95']}" if latency else "-"
        crossed = f"{s['arrived_share']:.0%}" if s["arrived_share"] is not None else "-"
        low, high = s["processed_share_range"]
        spread = f" ({low:.0%}-{high:.0%})" if s["runs"] > 1 else ""
        buffer = f"{s['receive_buffer'] / 2**20:.1f} MB" if s["receive_buffer"] else "-"
        ratio = (f"{s['processed_share'] / peer['processed_share']:.2f}x"
                 if peer and peer["processed_share"] else "-")
        lines.append(f"| {name} | {s['processed_share']:.0%}{spread}"
                     f" | {crossed} | {latency_text} | {s['link_bytes_per_frame'] / 1e3:.0f} KB"
                     f" | {s['link_mbit_per_s']} | {buffer} | {ratio} |")
    agreement = results.get("jpeg_agreement")
    if agreement and agreement["probability_difference"]:
        difference = agreement["probability_difference"]
        lines += ["", f"jpeg quality {agreement['quality']} against raw, the same "
                  f"{agreement['frames']} frames through the pipeline (no smoothing, no "
                  f"CNN-LSTM): the same label in {agreement['same_label']:.1%} of the "
                  f"{agreement['one_face_in_both']} frames with one face in both, class "
                  f"probabilities apart by {difference['median']} (median) / {difference['p95']} "
                  f"(p95) at most, faces found {agreement['faces']['raw']} / "
                  f"{agreement['faces']['jpeg']}; encoding {agreement['encode_ms_median']} ms "
                  f"and {agreement['jpeg_bytes_median'] / 1e3:.0f} KB a frame."]
    return "\n".join(lines) + "\n"


def update_readme(results: Dict[str, Any]) -> None:
    """Replace the README's two-host figures between their markers."""
    replace_readme_section("<!-- two_hosts: generated by benchmarks/two_hosts.py -->\n",
                           "<!-- /two_hosts -->", table(results))


def main(argv: Optional[List[str]] = None) -> int:
    """Run the scenarios, print the table; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS),
                        default=list(SCENARIOS))
    parser.add_argument("--video", type=Path, help=f"footage (default {BENCHMARK_VIDEO})")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each scenario (medians over them; about 25 s each)")
    parser.add_argument("--output", type=Path, help="JSON results file "
                        "(default benchmarks/results/two_hosts_<host>.json)")
    parser.add_argument("--update-readme", action="store_true",
                        help="rewrite the README's two-host table from this run")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return record_latency(*args.worker)
    reason = namespaces_unavailable()
    if reason:
        print(f"two_hosts: error: {reason}", file=sys.stderr)
        return 1
    video = args.video or footage(BENCHMARK_VIDEO)
    results: Dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                               "socket_buffer_caps": socket_buffer_caps(),
                               "repeats": args.repeats,
                               "video": video.name, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="fer_two_hosts_") as folder, \
            TwoHosts(f"b{os.getpid() % 100000}") as hosts:
        profiles = {"none": None, "profile": PROFILE, "capped": capped_profile(Path(folder))}
        runs: Dict[str, List[GraphRun]] = {name: [] for name in args.scenarios}
        for repeat in range(args.repeats):  # interleaved: a slow spell hits every scenario
            for index, name in enumerate(args.scenarios):
                transport, profile = SCENARIOS[name]
                print(f"{name}: run {repeat + 1} of {args.repeats}", file=sys.stderr, flush=True)
                runs[name].append(run_graph(
                    hosts, Path(folder) / f"{name}_{repeat}", transport=transport,
                    profile=profiles[profile], video=video, measure_latency=True,
                    domain=220 + index))
                print(json.dumps(summary(runs[name][-1:])), file=sys.stderr, flush=True)
        for name in args.scenarios:
            results["scenarios"][name] = summary(runs[name])
    print("jpeg against raw: running", file=sys.stderr, flush=True)
    results["jpeg_agreement"] = jpeg_agreement(video)
    print(table(results))
    output = args.output or REPO / "benchmarks" / "results" / \
        f"two_hosts_{platform.node() or 'host'}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output}")
    if args.update_readme:
        update_readme(results)
        print("updated README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
