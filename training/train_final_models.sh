#!/usr/bin/env bash
# Train the shipped ensemble's three members again on Training + PublicTest
# (#15's final-model lever): each config is its original run unchanged but for
# the data, `checkpoint: last` and the compute precision (test_training_configs
# checks this).
#
#   training/train_final_models.sh            # from the checkout, after tools/setup.sh
#
# About 8 h on 2 CPU cores in float32, about 6 h with the last three in
# bfloat16 (their configs say so).  Safe to stop and start again: an interrupted
# run resumes from its last finished epoch, a finished run is skipped.  Then
# export them as the shipped ensemble is exported (README, "The accuracy round").
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
for name in fer2013_multitask_vgg24_seed7_all \
            fer2013_multitask_vgg24_all \
            fer2013_multitask_vgg24_cycle2_all \
            fer2013_multitask_vgg32_recipe_all; do
    echo "== $name ($(date -u +%FT%TZ))"
    mkdir -p runs
    "$python" -m training.train_static "training/configs/$name.yaml" --skip-finished \
        2>&1 | tee -a "runs/$name.log"
done
