"""Loaders for labelled face datasets: FER2013, CK+ and folder-per-class.

Every loader returns a :class:`FaceDataset` of 48x48 uint8 grayscale faces
with canonical label names (see :mod:`fer_ros.labels`), so that relabelling,
splitting and class weighting work the same way for every source.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from fer_ros.labels import CKPLUS_LABELS, FER2013_LABELS, canonical_label, relabel
from fer_ros.preprocessing import FACE_SIZE, to_face_input

#: A face counts as blank when its pixel standard deviation is below this.
BLANK_STD_THRESHOLD = 3.0
#: A face counts as "text-like" (FER2013 watermark/text tiles) when more than
#: this share of its pixels is within 8 grey levels of its modal value, i.e. a
#: flat background with thin strokes on it.
FLAT_BACKGROUND_SHARE = 0.6
#: CK+ original emotion codes (Emotion/*_emotion.txt) -> canonical names.
CKPLUS_CODES: Dict[int, str] = {
    0: "neutral", 1: "angry", 2: "contempt", 3: "disgust", 4: "fear",
    5: "happy", 6: "sad", 7: "surprise"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset file or folder is missing, unreadable or malformed."""


@dataclass
class FaceDataset:
    """Grayscale 48x48 faces with canonical label names and optional metadata.

    :param images: uint8 [N, 48, 48].
    :param labels: canonical label names [N] (see :func:`canonical_label`).
    :param split: per-sample split name ("Training", "PublicTest", ...) or "".
    :param subject: per-sample subject id ("" when unknown).
    :param sequence: per-sample sequence id ("" when unknown).
    :param frame: per-sample frame index within its sequence (-1 if unknown).
    :param source: a short description of where the data came from.
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    subject: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    sequence: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    frame: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.shape[1:] != (FACE_SIZE, FACE_SIZE):
            raise DatasetError(
                f"{self.source}: images must be [N,{FACE_SIZE},{FACE_SIZE}], "
                f"got {self.images.shape}")
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=str)
        defaults = {"split": "", "subject": "", "sequence": "", "frame": -1}
        for name, default in defaults.items():
            value = np.asarray(getattr(self, name))
            if value.size == 0:
                value = np.full(n, default)
            if len(value) != n:
                raise DatasetError(
                    f"{self.source}: {name} has {len(value)} rows, images {n}")
            setattr(self, name, value)
        if len(self.labels) != n:
            raise DatasetError(
                f"{self.source}: {len(self.labels)} labels for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, mask: np.ndarray) -> "FaceDataset":
        """Return the samples selected by a boolean mask or index array."""
        return FaceDataset(
            self.images[mask], self.labels[mask], self.split[mask],
            self.subject[mask], self.sequence[mask], self.frame[mask],
            self.source)

    def targets(self, classes: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Images and class indices for ``classes``, dropping unmapped samples.

        :param classes: output label order (3 or 7 classes).
        :return: ``(images uint8 [M,48,48], y int64 [M])``.
        """
        y = relabel(self.labels, classes)
        keep = y >= 0
        return self.images[keep], y[keep]

    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of the images, labels and splits."""
        digest = hashlib.sha256()
        digest.update(self.images.tobytes())
        digest.update("\n".join(self.labels.tolist()).encode())
        digest.update("\n".join(map(str, self.split.tolist())).encode())
        return digest.hexdigest()[:16]


def concatenate(datasets: Iterable[FaceDataset]) -> FaceDataset:
    """Mix several datasets into one (cross-dataset training)."""
    parts = list(datasets)
    if not parts:
        raise DatasetError("no datasets to concatenate")
    return FaceDataset(
        np.concatenate([d.images for d in parts]),
        np.concatenate([d.labels for d in parts]),
        np.concatenate([d.split for d in parts]),
        np.concatenate([d.subject for d in parts]),
        np.concatenate([d.sequence for d in parts]),
        np.concatenate([d.frame for d in parts]),
        "+".join(d.source for d in parts))


# --------------------------------------------------------------------------
# FER2013

def load_fer2013(path: str | Path) -> FaceDataset:
    """Load FER2013 from ``fer2013.npz`` or the original ``fer2013.csv``.

    The npz holds ``images`` [N,48,48] uint8, ``labels`` (FER2013 indices) and
    ``usage``; the csv has the columns ``emotion,pixels,Usage``.

    :param path: the .npz or .csv file.
    :return: the dataset with ``split`` set from the usage column.
    :raises DatasetError: when the file is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if path.suffix == ".npz":
        arrays = _load_npz(path, ("images", "labels"))
        codes = arrays["labels"].astype(np.int64)
        usage = arrays.get("usage", np.full(len(codes), "Training"))
        images = arrays["images"]
    elif path.suffix == ".csv":
        images, codes, usage = _read_fer2013_csv(path)
    else:
        raise DatasetError(f"{path}: expected a .npz or .csv FER2013 file")
    if codes.size and (codes.min() < 0 or codes.max() >= len(FER2013_LABELS)):
        raise DatasetError(f"{path}: emotion codes must be 0..6")
    names = np.array(FER2013_LABELS)[codes]
    return FaceDataset(images, names, np.asarray(usage, dtype=str),
                       source=f"fer2013:{path.name}")


def _read_fer2013_csv(path: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    images: List[np.ndarray] = []
    codes: List[int] = []
    usage: List[str] = []
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: missing column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            pixels = np.array(row["pixels"].split(), dtype=np.int64)
            if pixels.size != FACE_SIZE * FACE_SIZE:
                raise DatasetError(
                    f"{path}:{line}: {pixels.size} pixels, expected "
                    f"{FACE_SIZE * FACE_SIZE}")
            images.append(pixels.clip(0, 255).astype(np.uint8).reshape(
                FACE_SIZE, FACE_SIZE))
            codes.append(int(row["emotion"]))
            usage.append(row.get("Usage") or "Training")
    if not images:
        raise DatasetError(f"{path}: no rows")
    return np.stack(images), np.array(codes), np.array(usage)


# --------------------------------------------------------------------------
# CK+

def load_ckplus(path: str | Path,
                crop: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                frames_per_sequence: int = 0) -> FaceDataset:
    """Load CK+ from ``ckplus48.npz`` or the original CK+ folder layout.

    The original layout is ``cohn-kanade-images/S005/001/S005_001_*.png`` with
    labels in ``Emotion/S005/001/S005_001_*_emotion.txt`` (codes 0-7); only
    labelled sequences are loaded.  Contempt is kept as ``"contempt"``: it
    maps to "negative" for 3 classes and is dropped for 7 classes.

    :param path: the .npz file or the CK+ root folder.
    :param crop: for the folder layout, a function from a full frame (uint8
        gray) to a 48x48 face; default: centre square crop.
    :param frames_per_sequence: folder layout only: keep the last N frames
        of each sequence (0 keeps every frame, for the CNN-LSTM).
    :return: the dataset with subject, sequence and frame set.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        arrays = _load_npz(path, ("images", "labels", "subject", "sequence"))
        classes = arrays.get("classes", np.array(CKPLUS_LABELS))
        names = [canonical_label(str(classes[i])) for i in arrays["labels"]]
        return FaceDataset(
            arrays["images"], np.array(names), np.full(len(names), ""),
            arrays["subject"].astype(str), arrays["sequence"].astype(str),
            arrays.get("frame", np.full(len(names), -1)),
            source=f"ckplus:{path.name}")
    if path.is_dir():
        return _load_ckplus_folder(path, crop, frames_per_sequence)
    raise DatasetError(f"{path}: expected ckplus .npz or the CK+ root folder")


def _load_ckplus_folder(root: Path,
                        crop: Optional[Callable[[np.ndarray], np.ndarray]],
                        frames_per_sequence: int) -> FaceDataset:
    image_root = root / "cohn-kanade-images"
    label_root = root / "Emotion"
    if not image_root.is_dir() or not label_root.is_dir():
        raise DatasetError(
            f"{root}: expected 'cohn-kanade-images' and 'Emotion' folders")
    crop = crop or _centre_face
    images, names, subjects, sequences, frames = [], [], [], [], []
    for label_file in sorted(label_root.glob("*/*/*_emotion.txt")):
        subject, sequence = label_file.parent.parent.name, label_file.parent.name
        code = int(float(label_file.read_text().split()[0]))
        if code not in CKPLUS_CODES:
            raise DatasetError(f"{label_file}: unknown CK+ emotion code {code}")
        frame_files = sorted(
            f for f in (image_root / subject / sequence).iterdir()
            if f.suffix.lower() in IMAGE_SUFFIXES)
        if frames_per_sequence > 0:
            frame_files = frame_files[-frames_per_sequence:]
        for frame_file in frame_files:
            images.append(crop(_read_gray(frame_file)))
            names.append(CKPLUS_CODES[code])
            subjects.append(subject)
            sequences.append(f"{subject}_{sequence}")
            frames.append(_frame_number(frame_file.stem))
    if not images:
        raise DatasetError(f"{root}: no labelled CK+ sequences found")
    return FaceDataset(np.stack(images), np.array(names), np.full(len(names), ""),
                       np.array(subjects), np.array(sequences), np.array(frames),
                       source=f"ckplus:{root.name}")


def _frame_number(stem: str) -> int:
    digits = re.findall(r"\d+", stem)
    return int(digits[-1]) if digits else -1


# --------------------------------------------------------------------------
# Folder per class

def load_folder(root: str | Path,
                crop: Optional[Callable[[np.ndarray], np.ndarray]] = None
                ) -> FaceDataset:
    """Load a folder-per-class dataset: ``root/<label>/*.png``.

    Folder names may be any accepted spelling (``happy``, ``Happiness``,
    ``negative``...).  Optional split folders ``root/<split>/<label>/`` (e.g.
    ``train/``, ``test/``) are recognised and recorded in ``split``.

    :param root: the dataset folder.
    :param crop: function from a gray image to a 48x48 face; default: the
        image is taken to be a face crop and resized.
    :return: the dataset.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    crop = crop or _centre_face
    images, names, splits = [], [], []
    for split, class_dir in _class_folders(root):
        label = canonical_label(class_dir.name)
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(crop(_read_gray(file)))
                names.append(label)
                splits.append(split)
    if not images:
        raise DatasetError(f"{root}: no images in class folders")
    return FaceDataset(np.stack(images), np.array(names), np.array(splits),
                       source=f"folder:{root.name}")


def _class_folders(root: Path) -> List[Tuple[str, Path]]:
    folders: List[Tuple[str, Path]] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            canonical_label(child.name)
            folders.append(("", child))
        except ValueError:
            folders.extend((child.name, grandchild) for grandchild in sorted(
                child.iterdir()) if grandchild.is_dir() and _is_label(grandchild.name))
    return folders


def _is_label(name: str) -> bool:
    try:
        canonical_label(name)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------
# Any labelled source

def load_any(path: str | Path) -> FaceDataset:
    """Load a dataset by its form: FER2013 .npz/.csv, CK+ .npz/folder, or folders.

    :param path: file or folder.
    :return: the dataset.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            is_ckplus = "subject" in arrays.files
        return load_ckplus(path) if is_ckplus else load_fer2013(path)
    if path.is_file() and path.suffix == ".csv":
        return load_fer2013(path)
    if path.is_dir():
        if (path / "cohn-kanade-images").is_dir():
            return load_ckplus(path)
        return load_folder(path)
    raise DatasetError(f"{path}: no such file or folder, or unknown format")


# --------------------------------------------------------------------------
# Splits, weights and junk

def subject_split(dataset: FaceDataset, test_share: float = 0.2,
                  seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Split sample indices by subject so no subject is in both parts.

    :param dataset: data with ``subject`` set.
    :param test_share: share of subjects held out (0..1).
    :param seed: random seed for the subject permutation.
    :return: ``(train_indices, test_indices)``.
    """
    subjects = np.unique(dataset.subject)
    if len(subjects) < 2 or (subjects == "").all():
        raise DatasetError(f"{dataset.source}: subject-wise split needs subjects")
    rng = np.random.default_rng(seed)
    order = rng.permutation(subjects)
    n_test = max(1, int(round(len(subjects) * test_share)))
    held_out = set(order[:n_test].tolist())
    is_test = np.array([s in held_out for s in dataset.subject])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def class_weights(y: np.ndarray, num_classes: int) -> Dict[int, float]:
    """Balanced class weights ``n / (k * count_c)``; absent classes get 0.

    :param y: int class indices.
    :param num_classes: number of classes k.
    :return: mapping class index -> weight (mean weight over samples is 1).
    """
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes)
    total = counts.sum()
    return {c: (float(total) / (num_classes * counts[c]) if counts[c] else 0.0)
            for c in range(num_classes)}


def find_junk(images: np.ndarray) -> Dict[str, np.ndarray]:
    """Flag FER2013-style junk faces: blank tiles and text-on-flat tiles.

    :param images: uint8 [N,48,48].
    :return: boolean masks ``{"blank": ..., "flat_background": ...}``.
    """
    flat = images.reshape(len(images), -1).astype(np.int16)
    blank = flat.std(axis=1) < BLANK_STD_THRESHOLD
    mode = np.array([np.bincount(row, minlength=256).argmax() for row in flat])
    near_mode = (np.abs(flat - mode[:, None]) <= 8).mean(axis=1)
    flat_background = (near_mode > FLAT_BACKGROUND_SHARE) & ~blank
    return {"blank": blank, "flat_background": flat_background}


# --------------------------------------------------------------------------
# File helpers

def _load_npz(path: Path, required: Sequence[str]) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as error:  # zipfile/pickle/ValueError variants
        raise DatasetError(f"{path}: not a readable .npz ({error})") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing array(s) {missing}")
    return arrays


def _read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DatasetError(f"{path}: not a readable image")
    return image


def _centre_face(gray: np.ndarray) -> np.ndarray:
    height, width = gray.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return to_face_input(gray[top:top + side, left:left + side])
