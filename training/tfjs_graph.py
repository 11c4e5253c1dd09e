"""Read a TF.js graph model (``model.json`` + weight shards) and run it as a reference.

A TF.js graph model is a JSON file with a ``modelTopology`` (a GraphDef in
protobuf-JSON form: ``node`` list of ``name``/``op``/``input``/``attr``) and a
``weightsManifest`` (groups of shard ``paths`` whose concatenated bytes hold
the listed ``weights`` in order, each ``name``/``shape``/``dtype``, optionally
``quantization``).  :func:`read_graph_model` returns the nodes and the weights
as numpy arrays; :func:`execute` runs the graph with TensorFlow ops, node by
node, so that a model rebuilt from it can be checked against the original.

Only what face-recognition graphs use is executed (convolutions with fused
bias/activations, element-wise arithmetic, a few reductions); any other op is
reported as a ValueError naming the node, never approximated.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

#: Bytes per stored value, by manifest dtype (quantized dtypes included).
_DTYPE_BYTES = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "uint16": 2, "float16": 2}
_NUMPY_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_,
                 "uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


@dataclass
class GraphModel:
    """A TF.js graph model: its nodes (GraphDef JSON dicts) and named weights."""

    path: Path
    nodes: List[Dict[str, Any]]
    weights: Dict[str, np.ndarray]
    metadata: Dict[str, Any]

    def node(self, name: str) -> Dict[str, Any]:
        """Return the node called ``name``; ValueError if there is none."""
        for node in self.nodes:
            if node["name"] == name:
                return node
        raise ValueError(f"{self.path}: no node named {name!r}")

    def by_name(self) -> Dict[str, Dict[str, Any]]:
        """Return the nodes keyed by name."""
        return {node["name"]: node for node in self.nodes}


def read_graph_model(path: Path | str) -> GraphModel:
    """Read a TF.js graph model from its ``model.json`` and the shards beside it.

    :param path: the JSON file; the shards named in its manifest are read from
        the same folder.
    :returns: nodes (in file order) and a dict weight name -> numpy array of
        the manifest's shape and dtype (quantized weights dequantized).
    :raises OSError: the JSON file or a shard is missing or unreadable.
    :raises ValueError: the JSON is not a graph model, or a shard is too short
        for the weights the manifest lists.
    """
    path = Path(path)
    if not path.is_file():
        raise OSError(f"{path}: not found")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a TF.js graph model (invalid JSON: {error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a TF.js graph model (top level is not an object)")
    topology = document.get("modelTopology")
    manifest = document.get("weightsManifest")
    if not isinstance(topology, dict) or not isinstance(topology.get("node"), list) \
            or not isinstance(manifest, list):
        raise ValueError(f"{path}: not a TF.js graph model "
                         "(needs modelTopology.node and weightsManifest)")
    weights: Dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            shard_paths = [path.parent / name for name in group["paths"]]
            specs = group["weights"]
        except (KeyError, TypeError):
            raise ValueError(f"{path}: weightsManifest group without paths/weights") from None
        data = b"".join(_read_shard(shard) for shard in shard_paths)
        weights.update(decode_weights(specs, data, source=f"{path} ({', '.join(group['paths'])})"))
    metadata = {key: value for key, value in document.items()
                if key not in ("modelTopology", "weightsManifest")}
    return GraphModel(path=path, nodes=topology["node"], weights=weights, metadata=metadata)


def _read_shard(path: Path) -> bytes:
    """Return the bytes of one weight shard; OSError naming it if unreadable."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise OSError(f"{path}: weight shard unreadable ({error.strerror or error})") from None


def decode_weights(specs: Sequence[Mapping[str, Any]], data: bytes,
                   source: str = "weights") -> Dict[str, np.ndarray]:
    """Decode one manifest group: ``specs`` laid out back to back in ``data``.

    Follows TF.js ``decodeWeights``: a spec with ``quantization`` stores its
    values as ``uint8``/``uint16`` (value = q * scale + min, rounded for int32)
    or ``float16`` (float32 weights only).  Bytes are little-endian.

    :raises ValueError: unknown dtype, bad quantization, or ``data`` too short.
    """
    weights: Dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        try:
            name, dtype = spec["name"], spec["dtype"]
            shape = [int(size) for size in spec["shape"]]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{source}: weight entry without name/shape/dtype: {spec}") from None
        quantization = spec.get("quantization")
        stored = quantization["dtype"] if quantization else dtype
        if dtype not in ("float32", "int32", "bool") or stored not in _DTYPE_BYTES:
            raise ValueError(f"{source}: weight {name!r}: unsupported dtype "
                             f"{dtype}{' stored as ' + stored if quantization else ''}")
        count = int(np.prod(shape, dtype=np.int64))
        size = count * _DTYPE_BYTES[stored]
        if offset + size > len(data):
            raise ValueError(f"{source}: truncated: weight {name!r} needs bytes "
                             f"{offset}..{offset + size}, the shards hold {len(data)}")
        raw = np.frombuffer(data, dtype=np.dtype(_NUMPY_DTYPES[stored]).newbyteorder("<"),
                            count=count, offset=offset)
        offset += size
        weights[name] = _dequantize(raw, dtype, quantization, f"{source}: weight {name!r}") \
            .reshape(shape)
    return weights


def _dequantize(raw: np.ndarray, dtype: str, quantization: Optional[Mapping[str, Any]],
                where: str) -> np.ndarray:
    """Return ``raw`` as ``dtype`` values, applying the manifest's quantization."""
    if not quantization:
        return raw.astype(_NUMPY_DTYPES[dtype])
    stored = quantization["dtype"]
    if stored == "float16":
        if dtype != "float32":
            raise ValueError(f"{where}: float16 quantization of a {dtype} weight")
        return raw.astype(np.float32)
    if stored not in ("uint8", "uint16") or dtype == "bool":
        raise ValueError(f"{where}: unsupported quantization {stored} of a {dtype} weight")
    try:
        scale, minimum = float(quantization["scale"]), float(quantization["min"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: {stored} quantization without scale/min") from None
    values = raw.astype(np.float64) * scale + minimum
    if dtype == "int32":
        return np.floor(values + 0.5).astype(np.int32)   # JavaScript Math.round
    return values.astype(np.float32)


# --- node attributes -------------------------------------------------------


def attr(node: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Return attribute ``key`` of a GraphDef-JSON node as a Python value.

    Strings (``s``, base64 in the JSON) are decoded to ``str``; integers
    (``i``, strings in the JSON) to ``int``; lists to Python lists; ``type``
    stays the enum name (``"DT_FLOAT"``); ``shape`` becomes a list of sizes
    (-1 for unknown).  Returns ``default`` when the attribute is absent.
    """
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [_decode_string(s) for s in items["s"]]
        if "i" in items:
            return [int(i) for i in items["i"]]
        if "f" in items:
            return [float(f) for f in items["f"]]
        return []
    if "s" in value:
        return _decode_string(value["s"])
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        return [int(dim.get("size", -1)) for dim in value["shape"].get("dim", [])]
    return default


def _decode_string(text: str) -> str:
    """Decode a protobuf-JSON bytes field (base64) to text."""
    return base64.b64decode(text).decode("utf-8")


def input_names(node: Mapping[str, Any]) -> List[str]:
    """Return the data inputs of ``node`` (control inputs dropped, ``:0`` stripped).

    :raises ValueError: an input reads output 1 or later of a multi-output op.
    """
    names = []
    for name in node.get("input", []):
        if name.startswith("^"):
            continue
        base, _, index = name.partition(":")
        if index not in ("", "0"):
            raise ValueError(f"node {node['name']!r}: input {name!r} reads output {index} "
                             "(multi-output ops are not supported)")
        names.append(base)
    return names


def topological_order(nodes: Iterable[Mapping[str, Any]], outputs: Sequence[str]) -> List[str]:
    """Return the names of the nodes ``outputs`` depend on, inputs first.

    :raises ValueError: an output or input names no node, or the graph has a cycle.
    """
    by_name = {node["name"]: node for node in nodes}
    order: List[str] = []
    state: Dict[str, int] = {}          # 1 = on the stack, 2 = done
    for output in outputs:
        if output not in by_name:
            raise ValueError(f"no node named {output!r}")
        stack = [(output, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise ValueError(f"the graph has a cycle through {name!r}")
            if name not in by_name:
                raise ValueError(f"a node reads {name!r}, which is not in the graph")
            state[name] = 1
            stack.append((name, True))
            for parent in reversed(input_names(by_name[name])):
                if state.get(parent) != 2:
                    stack.append((parent, False))
    return order


# --- reference executor ----------------------------------------------------


def _conv_args(node: Mapping[str, Any]) -> Dict[str, Any]:
    """Return the raw-op convolution arguments of a (fused) convolution node."""
    data_format = attr(node, "data_format", "NHWC")
    if data_format != "NHWC":
        raise ValueError(f"node {node['name']!r}: data_format {data_format} is not supported")
    return {"strides": attr(node, "strides", [1, 1, 1, 1]),
            "padding": attr(node, "padding", "VALID"),
            "explicit_paddings": attr(node, "explicit_paddings", []),
            "dilations": attr(node, "dilations", [1, 1, 1, 1]), "data_format": "NHWC"}


def _fused_activation(tf: Any, node: Mapping[str, Any], value: Any, extra: List[Any]) -> Any:
    """Apply the ``fused_ops`` of a fused convolution after its convolution."""
    fused = attr(node, "fused_ops", [])
    if not fused or fused[0] != "BiasAdd":
        raise ValueError(f"node {node['name']!r}: fused_ops {fused} are not supported")
    value = tf.raw_ops.BiasAdd(value=value, bias=extra[0])
    for op in fused[1:]:
        if op == "Relu":
            value = tf.raw_ops.Relu(features=value)
        elif op == "Relu6":
            value = tf.raw_ops.Relu6(features=value)
        elif op == "Prelu" and len(extra) > 1:
            value = tf.raw_ops.Relu(features=value) + extra[1] * tf.minimum(value, 0.0)
        else:
            raise ValueError(f"node {node['name']!r}: fused op {op} is not supported")
    return value


def execute(graph: GraphModel, feeds: Mapping[str, np.ndarray],
            outputs: Sequence[str]) -> List[np.ndarray]:
    """Run the graph with TensorFlow raw ops, one node at a time, and return ``outputs``.

    Each node is computed as its GraphDef op defines it (fused convolutions as
    convolution, then BiasAdd, then the fused activation, as TensorFlow and
    TF.js do).  This is a reference for checking rebuilt models, not fast;
    each intermediate value is released after the last node that reads it, so
    memory stays near the largest few maps of one batch.

    :param feeds: values for the Placeholder nodes, by node name.
    :raises ValueError: a Placeholder is not fed, a Const has no weight, or an
        op is not supported (message names the node and op).
    """
    import tensorflow as tf

    by_name = graph.by_name()
    values: Dict[str, Any] = {}
    binary = {"Add": tf.raw_ops.AddV2, "AddV2": tf.raw_ops.AddV2, "Sub": tf.raw_ops.Sub,
              "Mul": tf.raw_ops.Mul, "Maximum": tf.raw_ops.Maximum,
              "Minimum": tf.raw_ops.Minimum, "RealDiv": tf.raw_ops.RealDiv}
    unary = {"Relu": lambda x: tf.raw_ops.Relu(features=x),
             "Relu6": lambda x: tf.raw_ops.Relu6(features=x),
             "Abs": lambda x: tf.raw_ops.Abs(x=x), "Square": lambda x: tf.raw_ops.Square(x=x),
             "Rsqrt": lambda x: tf.raw_ops.Rsqrt(x=x), "Sqrt": lambda x: tf.raw_ops.Sqrt(x=x),
             "Neg": lambda x: tf.raw_ops.Neg(x=x),
             "Identity": lambda x: tf.raw_ops.Identity(input=x)}
    order = topological_order(graph.nodes, outputs)
    last_reader = {parent: step for step, name in enumerate(order)
                   for parent in input_names(by_name[name])}
    kept = set(outputs)
    for step, name in enumerate(order):
        node = by_name[name]
        op = node["op"]
        args = [values[parent] for parent in input_names(node)]
        for parent in set(input_names(node)):      # a value no later node reads is released
            if last_reader[parent] == step and parent not in kept:
                del values[parent]
        if op == "Placeholder":
            if name not in feeds:
                raise ValueError(f"{graph.path}: Placeholder {name!r} is not fed")
            value = tf.constant(feeds[name])
        elif op == "Const":
            if name not in graph.weights:
                raise ValueError(f"{graph.path}: Const {name!r} has no weight in the manifest")
            value = tf.constant(graph.weights[name])
        elif op in unary:
            value = unary[op](args[0])
        elif op in binary:
            value = binary[op](x=args[0], y=args[1])
        elif op in ("Conv2D", "_FusedConv2D"):
            value = tf.raw_ops.Conv2D(input=args[0], filter=args[1], **_conv_args(node))
            if op == "_FusedConv2D":
                value = _fused_activation(tf, node, value, args[2:])
        elif op in ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
            value = tf.raw_ops.DepthwiseConv2dNative(input=args[0], filter=args[1],
                                                     **_conv_args(node))
            if op == "FusedDepthwiseConv2dNative":
                value = _fused_activation(tf, node, value, args[2:])
        elif op == "BiasAdd":
            value = tf.raw_ops.BiasAdd(value=args[0], bias=args[1])
        elif op == "Squeeze":
            value = tf.raw_ops.Squeeze(input=args[0], axis=attr(node, "squeeze_dims", []))
        elif op in ("Sum", "Mean"):
            reduce = tf.raw_ops.Sum if op == "Sum" else tf.raw_ops.Mean
            value = reduce(input=args[0], axis=args[1], keep_dims=attr(node, "keep_dims", False))
        elif op == "Reshape":
            value = tf.raw_ops.Reshape(tensor=args[0], shape=args[1])
        else:
            raise ValueError(f"{graph.path}: node {name!r}: op {op} is not supported "
                             "by the reference executor")
        values[name] = value
    return [values[name].numpy() for name in outputs]
