"""Training speed in float32 against ``precision: mixed_bfloat16``, measured in one run.

    .venv/bin/python benchmarks/training_precision.py [CONFIG ...] [--steps 6]
        [--rounds 3] [--update-readme]

For each training config (default: the shipped ensemble's two trunks,
``fer2013_multitask_vgg24_seed7.yaml`` and ``fer2013_multitask_vgg32_recipe.yaml``,
and the published-width ``fer2013_multitask_vgg64_recipe.yaml``)
the config's own model, loss and optimizer train on batches of the config's
size (random faces: the speed of a step does not depend on what the faces
show), alternately ``--steps`` steps in float32 and in mixed bfloat16,
``--rounds`` times; the first step of each model (tracing) is not counted.
Printed: the median seconds per step of each, and their ratio, which is
what a run of that config gains from ``precision: mixed_bfloat16``.  Only
the ratio means anything across machines; the load average at the start is
printed because other work (a training run) slows both alike.  Whether
bfloat16 pays depends on the CPU: AMX or AVX512-BF16 units (listed) run it
natively; without them it is emulated and slower.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from bench_common import REPO, cpu_model, replace_readme_section

sys.path.insert(0, str(REPO))  # measure this checkout's training code

DEFAULT_CONFIGS = ("training/configs/fer2013_multitask_vgg24_seed7.yaml",
                   "training/configs/fer2013_multitask_vgg32_recipe.yaml",
                   "training/configs/fer2013_multitask_vgg64_recipe.yaml")
PRECISIONS = ("float32", "mixed_bfloat16")
#: Training faces the learning-rate schedule is sized for (it does not change a step's speed).
SCHEDULE_FACES = 28709
README_START = "<!-- benchmark: training_precision -->"
README_END = "<!-- /benchmark: training_precision -->"


def bf16_units() -> List[str]:
    """Return the CPU flags that run bfloat16 natively (amx_bf16, avx512_bf16)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]


def compiled_model(config, precision: str):
    """Build and compile the config's model in ``precision``; return it with a batch."""
    import keras

    from fer_ros.labels import label_set
    from training.common import build_optimizer, training_precision
    from training.models import HEAD_OUTPUTS, build_model, build_multitask

    rng = np.random.default_rng(0)
    size = config.batch_size
    faces = rng.integers(0, 256, (size, 48, 48, 1)).astype(np.float32)

    def random_targets(head: str) -> np.ndarray:
        classes = len(label_set(head))
        return np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size)]

    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    with training_precision(precision):
        if config.multitask:
            model = build_multitask(config.architecture, **config.model)
            targets = {output: random_targets(head) for head, output in HEAD_OUTPUTS.items()}
            loss = {name: loss for name in HEAD_OUTPUTS.values()}
        else:
            model = build_model(config.architecture, len(label_set(config.label_set)),
                                **config.model)
            targets = random_targets(config.label_set)
        model.compile(optimizer=build_optimizer(config, SCHEDULE_FACES), loss=loss)
        model.train_on_batch(faces, targets)  # traces the step
    return model, faces, targets


def step_seconds(model, faces, targets, steps: int) -> List[float]:
    """Time ``steps`` training steps; return the seconds of each."""
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        model.train_on_batch(faces, targets)
        times.append(time.perf_counter() - started)
    return times


def measure(config_path: Path, steps: int, rounds: int) -> Dict[str, float]:
    """Return median seconds per step in each precision and their ratio for one config."""
    from training.common import TrainConfig

    config = TrainConfig.from_yaml(config_path)
    models = {precision: compiled_model(config, precision) for precision in PRECISIONS}
    times: Dict[str, List[float]] = {precision: [] for precision in PRECISIONS}
    for _ in range(rounds):
        for precision in PRECISIONS:
            times[precision] += step_seconds(*models[precision], steps)
    medians = {precision: statistics.median(times[precision]) for precision in PRECISIONS}
    return {**medians, "speed_up": medians["float32"] / medians["mixed_bfloat16"],
            "batch": config.batch_size}


def table(results: Dict[str, Dict[str, float]], steps: int, rounds: int) -> str:
    """Return the results as a Markdown paragraph and table."""
    load = os.getloadavg()[0]
    units = ", ".join(bf16_units()) or "none (emulated)"
    lines = [f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} on {cpu_model()}, "
             f"{os.cpu_count()} cores (bfloat16 units: {units}; 1-minute load average "
             f"{load:.1f} at the start), by `benchmarks/training_precision.py`: "
             f"{rounds} alternating rounds of {steps} steps each, medians.", "",
             "| config | batch | float32, s/step | mixed_bfloat16, s/step | speed-up |",
             "|---|---|---|---|---|"]
    for name, row in results.items():
        lines.append(f"| `{name}` | {row['batch']} | {row['float32']:.3f} | "
                     f"{row['mixed_bfloat16']:.3f} | {row['speed_up']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Measure every config given and print (and optionally record) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path,
                        default=[Path(c) for c in DEFAULT_CONFIGS])
    parser.add_argument("--steps", type=int, default=6, help="steps per round and precision")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the table between the README's training_precision markers")
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    results = {}
    for path in args.configs:
        config = path if path.is_file() else REPO / path  # defaults are relative to the repo
        if not config.is_file():
            parser.error(f"{path}: no such config")
        results[path.name] = measure(config, args.steps, args.rounds)
        print(f"{path.name}: {results[path.name]}", flush=True)
    text = table(results, args.steps, args.rounds)
    print(text)
    if args.update_readme:
        replace_readme_section(README_START, README_END, "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
