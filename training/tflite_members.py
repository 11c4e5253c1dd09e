r"""Rebuild the Keras members of an exported VGG ensemble from its LiteRT file.

    git show be0f54e:fer_ros/weights/fer2013_3class.tflite > /tmp/pair/fer2013_3class.tflite
    git show be0f54e:fer_ros/weights/fer2013_3class.json > /tmp/pair/fer2013_3class.json
    python -m training.tflite_members /tmp/pair/fer2013_3class.tflite \
        --stage-filters 24 48 96 192 --out runs/shipped_3class

(be0f54e holds the two-CNN pair shipped before the three-CNN ensemble.)
Without ``--stage-filters`` each member's trunk (channels per stage, convs
per stage, centre crop) is read from its kernels' shapes, so ensembles of
different trunks, such as the shipped one, are rebuilt too.

A shipped model is the only copy of its weights once its training runs are
gone; to put one of its members into a new ensemble (or distil from it) the
member is needed as a Keras model again.  For each ``member_K`` of the graph
this builds :func:`training.models.build_vgg_residual` with the given
stages and loads the exported weights into it: each 3x3 convolution gets
the stored kernel (int8 weights dequantised with their per-channel scales)
and its batch norm becomes the stored bias (the converter folded the batch
norm into kernel and bias).  Each member is written as a run folder
(``best.keras``, and ``best.json`` + ``config.yaml`` with the labels and
test-time views of the sidecar) that :mod:`training.export` takes as it
is; the rebuilt ensemble is checked against the LiteRT file on
``--check-faces`` validation faces.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml

#: Name part of a member's tensors in an ensemble graph (training.export).
MEMBER = re.compile(r"member_(\d+)")
#: Name part of a convolution's kernel tensor: the layer name before ``_conv``.
CONV = re.compile(r"/(stage\d+_\d+|class_conv\w*?)(?:_conv)?_\d+/convolution")
#: Test-time view settings a member shares with its ensemble's sidecar.
TTA_KEYS = ("tta_flip", "tta_zooms", "tta_shifts")
#: Largest accepted difference from a file of unknown weight format.
REBUILD_TOLERANCE = 1e-4


def dequantised(interpreter, tensor: Dict) -> np.ndarray:
    """Float values of a constant tensor, int8 ones scaled per output channel."""
    values = interpreter.get_tensor(tensor["index"]).astype(np.float32)
    if tensor["dtype"] == np.int8:
        params = tensor["quantization_parameters"]
        shape = [1] * values.ndim
        shape[params["quantized_dimension"]] = -1
        values = (values - params["zero_points"].reshape(shape)) * \
            params["scales"].reshape(shape)
    return values


def convolutions(path: Path) -> Dict[int, Dict[str, tuple]]:
    """Kernel [h, w, in, out], bias and input side of every convolution, by member and layer.

    :raises ValueError: when the graph holds no ``member_K`` convolutions.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path))
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    members: Dict[int, Dict[str, tuple]] = {}
    for op in interpreter._get_ops_details():  # no public API lists the graph's ops
        if op["op_name"] != "CONV_2D":
            continue
        kernel, bias = (tensors[i] for i in op["inputs"][1:3])
        member, layer = MEMBER.search(kernel["name"]), CONV.search(kernel["name"])
        if member is None or layer is None:
            raise ValueError(f"{path}: convolution {kernel['name']!r} is not a member's")
        name = "class_conv" if layer.group(1).startswith("class_conv") else layer.group(1)
        weights = dequantised(interpreter, kernel).transpose(1, 2, 3, 0)  # OHWI -> HWIO
        side = int(tensors[op["inputs"][0]]["shape"][1])
        members.setdefault(int(member.group(1)), {})[name] = \
            (weights, dequantised(interpreter, bias), side)
    if not members:
        raise ValueError(f"{path}: no ensemble members found")
    return members


def architecture(layers: Dict[str, tuple]) -> Dict[str, Any]:
    """Read a member's VGG hyperparameters from its convolutions' shapes.

    :return: ``stage_filters`` (output channels of each stage's first conv),
        ``convs_per_stage`` and ``crop`` (the side the first conv sees, 0 for
        the whole face).
    :raises ValueError: when the names are not those of a VGG trunk.
    """
    from fer_ros.preprocessing import FACE_SIZE

    stages: Dict[int, Dict[int, tuple]] = {}
    for name, layer in layers.items():
        match = re.fullmatch(r"stage(\d+)_(\d+)", name)
        if match:
            stages.setdefault(int(match.group(1)), {})[int(match.group(2))] = layer
        elif name != "class_conv":
            raise ValueError(f"convolution {name!r} is not a VGG trunk's")
    if not stages or sorted(stages) != list(range(1, len(stages) + 1)):
        raise ValueError(f"stages {sorted(stages)} are not 1..n")
    side = stages[1][1][2]
    return {"stage_filters": [int(stages[s][1][0].shape[-1]) for s in sorted(stages)],
            "convs_per_stage": max(len(convs) for convs in stages.values()),
            "crop": 0 if side == FACE_SIZE else side}


def rebuild_member(layers: Dict[str, tuple], num_classes: int,
                   stage_filters: Optional[Sequence[int]] = None,
                   convs_per_stage: Optional[int] = None):
    """Build a :func:`training.models.build_vgg_residual` model holding ``layers``' weights.

    :param stage_filters: channels per stage; None reads them (and the
        crop) from the kernels' shapes (:func:`architecture`).
    :param convs_per_stage: None reads it from the layer names.
    :raises ValueError: when the shapes do not fit the architecture.
    """
    from training.models import build_vgg_residual

    found = architecture(layers)
    model = build_vgg_residual(
        num_classes, stage_filters=tuple(stage_filters or found["stage_filters"]),
        convs_per_stage=convs_per_stage or found["convs_per_stage"], crop=found["crop"])
    expected = {layer.name[:-len("_conv")] for layer in model.layers
                if layer.name.endswith("_conv") and layer.name != "class_conv"}
    expected.add("class_conv")
    if set(layers) != expected:
        raise ValueError(f"the graph's convolutions {sorted(layers)} do not match the "
                         f"architecture's {sorted(expected)}")
    for name, (kernel, bias, _) in layers.items():
        if name == "class_conv":
            model.get_layer(name).set_weights([kernel, bias])
            continue
        model.get_layer(f"{name}_conv").set_weights([kernel])
        norm = model.get_layer(f"{name}_bn")
        # gamma 1, beta = bias, mean 0, variance 1 - eps: the norm adds the bias.
        norm.set_weights([np.ones_like(bias), bias, np.zeros_like(bias),
                          np.full_like(bias, 1.0 - norm.epsilon)])
    return model


def write_member_runs(path: Path, out: Path, stage_filters: Optional[Sequence[int]] = None,
                      convs_per_stage: Optional[int] = None,
                      val_data: str = "../shared/data/fer2013.npz",
                      val_split: str = "PublicTest") -> List[Path]:
    """Rebuild every member of ``path`` and write it as ``out/member_K/`` run folders.

    ``stage_filters`` / ``convs_per_stage`` None: each member's own, read
    from its kernels (members may differ).
    """
    from fer_ros.model_files import read_sidecar

    sidecar = read_sidecar(path, required=True)
    labels = list(sidecar["labels"])
    label_set = {3: "3class", 7: "7class"}.get(len(labels))
    if label_set is None:
        raise ValueError(f"{path}: {len(labels)} classes; only 3 or 7 can be rebuilt")
    members = sorted(convolutions(path).items())
    # training.export lists the runs in member order.
    origins = sidecar.get("runs", [])
    origins = [[run] for run in origins] if len(origins) == len(members) \
        else [origins] * len(members)
    runs = []
    for index, layers in members:
        settings = dict(architecture(layers))
        settings["stage_filters"] = list(stage_filters or settings["stage_filters"])
        settings["convs_per_stage"] = convs_per_stage or settings["convs_per_stage"]
        model = rebuild_member(layers, len(labels), settings["stage_filters"],
                               settings["convs_per_stage"])
        run = out / f"member_{index}"
        run.mkdir(parents=True, exist_ok=True)
        model.save(run / "best.keras")
        config = {"name": f"{out.name}_member_{index}", "label_set": label_set,
                  "architecture": "vgg", "val_data": val_data, "val_split": val_split,
                  "model": settings,
                  "tta_flip": bool(sidecar.get("tta_flip", False)),
                  "tta_zooms": list(sidecar.get("tta_zooms", [1.0])),
                  "tta_shifts": sidecar.get("tta_shifts", [[0, 0]]),
                  "rebuilt_from": str(path), "rebuilt_from_runs": origins[index]}
        (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        # the sidecar EmotionClassifier reads for a .keras file (as training writes)
        member_sidecar = {"labels": labels, **{k: config[k] for k in TTA_KEYS},
                          "trained_on": sidecar.get("trained_on", []),
                          "rebuilt_from": str(path)}
        (run / "best.json").write_text(json.dumps(member_sidecar, indent=2) + "\n")
        runs.append(run)
    return runs


def check_rebuild(path: Path, runs: Sequence[Path], faces: np.ndarray) -> tuple:
    """Compare the file's and the rebuilt members' mean probabilities on faces.

    The members are averaged with the sidecar's ``member_weights`` if it has them.

    An int8 file quantises activations as it runs, so the rebuilt float
    members differ from it as much as an export may differ from Keras
    (:data:`training.export.EXPORT_TOLERANCE`).

    :return: ``(max |difference|, share of faces given the same class)``.
    :raises RuntimeError: when they differ more than an export may.
    """
    import keras

    from fer_ros.classification import EmotionClassifier
    from training.export import EXPORT_TOLERANCE, INT8_MIN_AGREEMENT

    shipped_model = EmotionClassifier.load(path, tta_flip=False, tta_zooms=[1.0],
                                           tta_shifts=[[0, 0]])
    # The members' raw mean: without the temperature a sidecar may carry.
    shipped_model.info = dataclasses.replace(shipped_model.info, temperatures=())
    shipped = shipped_model.predict_proba(faces)
    extra = shipped_model.info.extra or {}
    rebuilt = np.average([keras.models.load_model(run / "best.keras", compile=False)
                          .predict(faces[..., None].astype(np.float32), verbose=0)
                          for run in runs], axis=0, weights=extra.get("member_weights"))
    difference = float(np.abs(shipped - rebuilt).max())
    agreement = float((shipped.argmax(1) == rebuilt.argmax(1)).mean())
    weights = str(extra.get("weights_dtype", "float32"))
    if difference > EXPORT_TOLERANCE.get(weights, REBUILD_TOLERANCE) or \
            agreement < INT8_MIN_AGREEMENT:
        raise RuntimeError(f"rebuilt members differ from {path}: max |difference| "
                           f"{difference:.2e}, same class on {agreement:.1%} of faces")
    return difference, agreement


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an exported VGG (ensemble) .tflite")
    parser.add_argument("--stage-filters", type=int, nargs="+", default=None,
                        help="channels per stage of every member, e.g. 24 48 96 192 "
                             "(default: each member's own, read from its kernels)")
    parser.add_argument("--convs-per-stage", type=int, default=None,
                        help="default: read from the layer names")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the member run folders (member_0, ...)")
    parser.add_argument("--data", default="../shared/data/fer2013.npz",
                        help="validation data written into the members' configs")
    parser.add_argument("--check-faces", type=int, default=256,
                        help="validation faces the rebuild is checked on (0 = no check)")
    args = parser.parse_args(argv)
    try:
        runs = write_member_runs(args.model, args.out, args.stage_filters,
                                 args.convs_per_stage, args.data)
        message = f"rebuilt {len(runs)} members of {args.model} into {args.out}"
        if args.check_faces:
            from training.common import load_split

            faces = load_split([args.data], "PublicTest", "7class", drop_blank=False)[0]
            difference, agreement = check_rebuild(args.model, runs,
                                                  faces[:args.check_faces])
            message += (f"; mean probabilities within {difference:.1e} of the file, the "
                        f"same class on {agreement:.1%} of {min(args.check_faces, len(faces))}"
                        " validation faces")
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        print(f"tflite_members: error: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
