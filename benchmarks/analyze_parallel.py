"""``fer-analyze`` on several sessions: ``--jobs 1`` against ``--jobs 2``, measured in one run.

    .venv/bin/python benchmarks/analyze_parallel.py [--sessions 4] [--repeats 3] [--jobs 2]
        [--video] [--update-readme]

The same sessions (copies of ../shared/media/WolfgangLanger_Pexels.mp4,
472 frames of 640x360 each, linked under a temporary folder) are analysed
by the whole command, ``python -m fer_ros.session.cli`` from this checkout,
alternately with ``--jobs 1`` (the peer: one session after another in one
process, 2 LiteRT threads) and ``--jobs N`` (N worker processes, their
threads set to their share of the cores), ``--repeats`` times each.  For
each run: wall time, frames per second (frames read over all sessions /
wall time), CPU seconds per frame (user + system time of the command and
its worker processes, from ``getrusage(RUSAGE_CHILDREN)``), the cores
used (CPU seconds / wall seconds) and the peak
resident memory of the largest process.  Printed: medians, and the ratios
of ``--jobs N`` to ``--jobs 1`` (throughput ratio, CPU-per-frame growth).
Also measured in the same run, as the ceiling the machine allows: the
issue's own measurement, two separate single-session commands in turn and
side by side.  Results go to ``benchmarks/results/analyze_parallel_<host>.json``.  The
load average at the start is printed: other work on the machine (a
training run) slows both alike, so compare the ratios of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from bench_common import cpu_model, replace_readme_section

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO.parent / "shared" / "media"
FOOTAGE = "WolfgangLanger_Pexels.mp4"
#: Targets of issue 18 on a 2-core machine.
MIN_RATIO = 1.2
MAX_CPU_GROWTH = 0.15
RESULTS = REPO / "benchmarks" / "results"
README_START = "<!-- benchmark: analyze_parallel -->"
README_END = "<!-- /benchmark: analyze_parallel -->"


def machine() -> Dict[str, Any]:
    """Describe the machine and its load."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def run_once(inputs: Path, output: Path, jobs: int, video: bool) -> Dict[str, float]:
    """Run fer-analyze on the folder once; wall, CPU and memory of it and its workers."""
    command = [sys.executable, "-m", "fer_ros.session.cli", str(inputs), "--output",
               str(output), "--jobs", str(jobs), "--quiet"] + ([] if video else ["--no-video"])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"benchmark: fer-analyze --jobs {jobs} failed:\n"
                         f"{completed.stderr[-3000:]}")
    frames = sum(json.loads(path.read_text())["frames_processed"]
                 for path in output.glob("*/summary.json"))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "frames": frames, "frames_per_s": frames / wall,
            "cpu_s": cpu, "cpu_s_per_frame": cpu / frames, "cores_used": cpu / wall,
            "peak_rss_mb": after.ru_maxrss / 1024.0}


def run_side_by_side(footage: Path, folder: Path, together: bool) -> Dict[str, float]:
    """Run the issue's own measurement: two single-session commands, in turn or together."""
    commands = [[sys.executable, "-m", "fer_ros.session.cli", str(footage), "--output",
                 str(folder / f"single_{number}"), "--quiet", "--no-video"]
                for number in (1, 2)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if together:
        processes = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for c in commands]
        codes = [p.wait() for p in processes]
    else:
        codes = [subprocess.run(c, cwd=REPO, capture_output=True).returncode for c in commands]
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if any(codes):
        raise SystemExit("benchmark: a single-session fer-analyze failed")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cores_used": cpu / wall}


BURN = "import time\nt = time.process_time()\nend = time.time() + {s}\n" \
    "while time.time() < end: pass\nprint(time.process_time() - t)"


def cores_available(seconds: float = 3.0) -> Dict[str, float]:
    """Cores the machine gives this run: one busy loop, then two side by side."""
    def burn(count: int) -> float:
        processes = [subprocess.Popen([sys.executable, "-c", BURN.format(s=seconds)],
                                      stdout=subprocess.PIPE, text=True) for _ in range(count)]
        return sum(float(p.communicate()[0]) for p in processes) / seconds
    return {"one_busy_loop": round(burn(1), 2), "two_busy_loops": round(burn(2), 2)}


def median_of(runs: List[Dict[str, float]], key: str) -> float:
    """Return the median of one figure over runs."""
    return statistics.median(run[key] for run in runs)


def measure(sessions: int, repeats: int, jobs: int, video: bool) -> Dict[str, Any]:
    """Alternate --jobs 1 and --jobs N runs on the same sessions; return all figures."""
    footage = MEDIA / FOOTAGE
    if not footage.is_file():
        raise SystemExit(f"benchmark: {footage} not found (needs ../shared/media)")
    described = machine()
    available = cores_available()
    print(f"  cores available to this run: {available}", flush=True)
    runs: Dict[int, List[Dict[str, float]]] = {1: [], jobs: []}
    with tempfile.TemporaryDirectory(prefix="fer_parallel_") as folder:
        inputs = Path(folder) / "sessions"
        inputs.mkdir()
        for number in range(1, sessions + 1):
            (inputs / f"session_{number:02d}.mp4").symlink_to(footage)
        pair: Dict[str, List[Dict[str, float]]] = {"in turn": [], "side by side": []}
        for repeat in range(repeats):
            for count in (1, jobs):
                output = Path(folder) / f"out_{count}_{repeat}"
                runs[count].append(run_once(inputs, output, count, video))
                print(f"  run {repeat + 1}/{repeats} --jobs {count}: "
                      f"{runs[count][-1]['wall_s']:.1f} s, "
                      f"{runs[count][-1]['frames_per_s']:.0f} frames/s", flush=True)
            for mode in pair:
                pair[mode].append(run_side_by_side(footage, Path(folder), mode != "in turn"))
                print(f"  run {repeat + 1}/{repeats} two single sessions {mode}: "
                      f"{pair[mode][-1]['wall_s']:.1f} s", flush=True)
    figures = {str(count): {key: round(median_of(values, key), 4) for key in values[0]}
               for count, values in runs.items()}
    one, many = figures["1"], figures[str(jobs)]
    available_after = cores_available()
    print(f"  cores available to this run: {available_after}", flush=True)
    return {"machine": described, "cores_available": [available, available_after],
            "sessions": sessions, "frames_per_session": 472,
            "repeats": repeats, "jobs": jobs, "annotated_video": video,
            "runs": {str(k): v for k, v in runs.items()}, "median": figures,
            "two_processes": {mode: {key: round(median_of(values, key), 3)
                                     for key in values[0]} for mode, values in pair.items()},
            "two_processes_ratio": round(median_of(pair["in turn"], "wall_s")
                                         / median_of(pair["side by side"], "wall_s"), 3),
            "throughput_ratio": round(many["frames_per_s"] / one["frames_per_s"], 3),
            "cpu_per_frame_growth": round(many["cpu_s_per_frame"] / one["cpu_s_per_frame"]
                                          - 1.0, 3)}


def table(results: Dict[str, Any]) -> str:
    """Format the figures as a Markdown table with a line describing the run."""
    m, jobs = results["machine"], results["jobs"]
    lines = [f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores (1-minute load "
             f"average {m['load_average'][0]:.1f} at the start; the cores the run really "
             f"had are measured below), "
             f"Python {m['python']}, by `benchmarks/analyze_parallel.py`: "
             f"{results['sessions']} sessions of {results['frames_per_session']} frames "
             f"(640x360), {'with' if results['annotated_video'] else 'without'} "
             f"annotated.mp4, medians of {results['repeats']} alternating runs of the whole "
             "command.", "",
             "| | wall s | frames/s | CPU s / frame | cores used | peak RSS (largest process) |",
             "|---|---|---|---|---|---|"]
    for count in ("1", str(jobs)):
        row = results["median"][count]
        label = "`--jobs 1` (peer)" if count == "1" else f"`--jobs {count}`"
        lines.append(f"| {label} | {row['wall_s']:.1f} | {row['frames_per_s']:.0f} | "
                     f"{row['cpu_s_per_frame'] * 1000:.1f} ms | {row['cores_used']:.2f} | "
                     f"{row['peak_rss_mb']:.0f} MB |")
    pair = results["two_processes"]
    lines += ["", f"Throughput ratio `--jobs {jobs}` / `--jobs 1`: "
              f"**{results['throughput_ratio']:.2f}x**; CPU seconds per frame "
              f"{results['cpu_per_frame_growth']:+.0%}. The ceiling in the same run (the "
              "issue's measurement: two separate single-session commands on the footage): "
              f"{pair['in turn']['wall_s']:.1f} s in turn, "
              f"{pair['side by side']['wall_s']:.1f} s side by side, "
              f"{results['two_processes_ratio']:.2f}x (cores used "
              f"{pair['in turn']['cores_used']:.2f} / "
              f"{pair['side by side']['cores_used']:.2f}).",
              "", "Cores the machine gave this run (busy loops before and after: one "
              "alone / two side by side together): " + ", ".join(
                  f"{a['one_busy_loop']:.2f} / {a['two_busy_loops']:.2f}"
                  for a in results["cores_available"]) + "."]
    return "\n".join(lines)


def update_readme(results: Dict[str, Any]) -> None:
    """Replace the README's generated block with this run's table."""
    replace_readme_section(README_START + "\n", README_END, table(results) + "\n")


def main(argv: List[str] | None = None) -> int:
    """Run the benchmark; print the figures and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="the parallel run's --jobs")
    parser.add_argument("--video", action="store_true", help="also write annotated.mp4")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    results = measure(args.sessions, args.repeats, args.jobs, args.video)
    print(table(results))
    ok = (results["throughput_ratio"] >= MIN_RATIO
          and results["cpu_per_frame_growth"] < MAX_CPU_GROWTH)
    print(f"targets (ratio >= {MIN_RATIO}, CPU/frame growth < {MAX_CPU_GROWTH:.0%}): "
          f"{'met' if ok else 'NOT met'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"analyze_parallel_{platform.node()}.json").write_text(
        json.dumps(results, indent=2) + "\n")
    if args.update_readme:
        update_readme(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
