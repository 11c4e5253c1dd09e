"""Test-time augmentation: classify a face in several views and average.

A view is the face at one zoom (scaled about its centre, borders
reflected like the training augmentation) and one shift (moved by whole
pixels; with a model that centre-crops its input this picks another crop,
as in the "ten crops" of FER2013 recipes), mirrored or not.  Averaging the
class probabilities (and feature vectors) over views makes a small model's
output steadier and more accurate, at the cost of one forward pass per
view; the views of a batch run as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import cv2
import numpy as np

#: Zooms accepted in a view set (share of the face size; 1.0 = as cropped).
ZOOM_RANGE = (0.5, 2.0)
#: Largest shift accepted in a view set, pixels either way.
MAX_SHIFT_PX = 12

Shift = Tuple[int, int]


@dataclass(frozen=True)
class TtaViews:
    """Which views of each face a classifier averages over.

    :param flip: add the mirror image of every zoomed view.
    :param zooms: zoom factors about the face centre; ``> 1`` enlarges the
        face (crops tighter), ``< 1`` shrinks it.  ``(1.0,)`` = no zoom.
    :param shifts: ``(down, right)`` pixel offsets applied to every zoomed
        view; ``((0, 0),)`` = no shift.
    """

    flip: bool = False
    zooms: Tuple[float, ...] = (1.0,)
    shifts: Tuple[Shift, ...] = ((0, 0),)

    def __post_init__(self) -> None:
        zooms = tuple(float(z) for z in self.zooms)
        if not zooms:
            raise ValueError("test-time zooms must not be empty")
        bad = [z for z in zooms if not ZOOM_RANGE[0] <= z <= ZOOM_RANGE[1]]
        if bad:
            raise ValueError(f"test-time zooms {bad} outside {ZOOM_RANGE}")
        object.__setattr__(self, "zooms", zooms)
        object.__setattr__(self, "shifts", _checked_shifts(self.shifts))

    @property
    def num_views(self) -> int:
        """Forward passes per face."""
        return len(self.zooms) * len(self.shifts) * (2 if self.flip else 1)

    def views(self, faces: np.ndarray) -> np.ndarray:
        """Stack every view of a batch, view-major.

        :param faces: [N,H,W] gray faces (any numeric dtype).
        :return: float32 [num_views * N, H, W, 1]; rows ``v*N .. v*N+N-1``
            hold view ``v`` of faces ``0..N-1``.
        """
        x = np.asarray(faces, np.float32)
        out = []
        for zoom in self.zooms:
            for shift in self.shifts:
                view = x if (zoom, shift) == (1.0, (0, 0)) else zoom_faces(x, zoom, shift)
                out.append(view)
                if self.flip:
                    out.append(view[:, :, ::-1])
        return np.concatenate(out)[..., None]

    def average(self, outputs: np.ndarray, n: int) -> np.ndarray:
        """Average view-major model outputs [num_views * n, ...] back to [n, ...]."""
        return outputs.reshape((self.num_views, n) + outputs.shape[1:]).mean(axis=0)

    def to_sidecar(self) -> Dict[str, Any]:
        """Return the sidecar entries describing this view set."""
        return {"tta_flip": self.flip, "tta_zooms": list(self.zooms),
                "tta_shifts": [list(shift) for shift in self.shifts]}

    @classmethod
    def from_sidecar(cls, raw: Dict[str, Any]) -> "TtaViews":
        """Read (and remove) the view-set entries of a sidecar dict.

        :raises ValueError: for zooms that are not a list of numbers in range,
            or shifts that are not pairs of whole pixels in range.
        """
        zooms = raw.pop("tta_zooms", [1.0])
        try:
            zooms = tuple(float(z) for z in zooms)
        except (TypeError, ValueError):
            raise ValueError(f"tta_zooms must be a list of numbers, not {zooms!r}") from None
        return cls(bool(raw.pop("tta_flip", False)), zooms,
                   raw.pop("tta_shifts", ((0, 0),)))


def _checked_shifts(shifts: Any) -> Tuple[Shift, ...]:
    """Return shifts as a tuple of ``(int, int)`` pairs, or raise ValueError."""
    try:
        pairs = tuple((int(down), int(right)) for down, right in shifts)
        exact = all(float(a) == b for shift, pair in zip(shifts, pairs)
                    for a, b in zip(shift, pair))
    except (TypeError, ValueError):
        raise ValueError(f"tta_shifts must be a list of [down, right] pixel pairs, "
                         f"not {shifts!r}") from None
    if not pairs or not exact:
        raise ValueError(f"tta_shifts must be a non-empty list of whole-pixel pairs, "
                         f"not {shifts!r}")
    if any(abs(v) > MAX_SHIFT_PX for pair in pairs for v in pair):
        raise ValueError(f"tta_shifts {shifts!r} beyond {MAX_SHIFT_PX} px")
    return pairs


def zoom_faces(faces: np.ndarray, zoom: float, shift: Shift = (0, 0)) -> np.ndarray:
    """Scale each [H,W] face about its centre by ``zoom``, then move it by ``shift``.

    Borders are reflected, as in the training augmentation.

    :param faces: float32 [N,H,W].
    :param zoom: scale factor (> 1 enlarges).
    :param shift: ``(down, right)`` offset in pixels.
    :return: float32 [N,H,W].
    """
    n, height, width = faces.shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), 0.0, zoom)
    matrix[:, 2] += (shift[1], shift[0])
    # Faces side by side as channels: one warp for the whole batch (cv2 takes
    # up to 512 channels).
    out = np.empty_like(faces)
    for start in range(0, n, 512):
        chunk = np.ascontiguousarray(faces[start:start + 512].transpose(1, 2, 0))
        warped = cv2.warpAffine(chunk, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
        out[start:start + 512] = warped.reshape(height, width, -1).transpose(2, 0, 1)
    return out
