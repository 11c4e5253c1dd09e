"""Counts and rates of a node's frames, and the health they add up to (for /diagnostics).

Pure Python: the fer node feeds it and publishes :meth:`FrameStatistics.health`
as a ``diagnostic_msgs/DiagnosticStatus``.  Rates are judged against the
input: a node that keeps up with a 5 fps camera is healthy, one that
processes 10 of 30 frames per second is not.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, List, Tuple

#: Frames whose times are kept for the rate and processing-time figures.
WINDOW = 100
#: WARN when fewer than this share of the received frames per second are processed.
WARN_PROCESSED_SHARE = 0.5
#: WARN when more than this share of all frames was dropped, bad or failed.
WARN_LOST_SHARE = 0.5


@dataclass(frozen=True)
class Health:
    """A node's frame health: OK or WARN, why, and the figures behind it.

    :param ok: False for a warning.
    :param message: one line, e.g. ``"processing 8.0 of 30.0 frames/s"``.
    :param values: ``(key, value)`` figures for the diagnostics message.
    """

    ok: bool
    message: str
    values: Tuple[Tuple[str, str], ...]


def rate(times: List[float]) -> float:
    """Events per second over a list of increasing times (0 with fewer than two)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


class FrameStatistics:
    """Frames received, processed, dropped, bad and failed, with recent rates.

    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.received = self.processed = self.dropped = self.bad_frames = self.failures = 0
        self._arrivals: Deque[float] = deque(maxlen=WINDOW)
        self._completions: Deque[float] = deque(maxlen=WINDOW)
        self._durations_ms: Deque[float] = deque(maxlen=WINDOW)

    def on_received(self, replaced_pending: bool) -> None:
        """Count one arriving frame; ``replaced_pending``: it displaced an unprocessed one."""
        self.received += 1
        self.dropped += int(replaced_pending)
        self._arrivals.append(self._clock())

    def on_processed(self, duration_ms: float) -> None:
        """Count one processed frame that took ``duration_ms``."""
        self.processed += 1
        self._durations_ms.append(float(duration_ms))
        self._completions.append(self._clock())

    @property
    def input_fps(self) -> float:
        """Recent arrival rate, frames/s."""
        return rate(list(self._arrivals))

    @property
    def processed_fps(self) -> float:
        """Recent processing rate, frames/s."""
        return rate(list(self._completions))

    def health(self, tracked_faces: int = 0) -> Health:
        """Judge the recent rates and the lost share; return the diagnostics content."""
        input_fps, processed_fps = self.input_fps, self.processed_fps
        lost = self.dropped + self.bad_frames + self.failures
        median_ms = statistics.median(self._durations_ms) if self._durations_ms else 0.0
        ok, message = True, "ok" if self.received else "waiting for images"
        if self.received and lost / self.received > WARN_LOST_SHARE:
            ok, message = False, f"{lost} of {self.received} frames dropped, bad or failed"
        elif input_fps > 0 and processed_fps < WARN_PROCESSED_SHARE * input_fps:
            ok, message = False, (f"processing {processed_fps:.1f} of {input_fps:.1f} "
                                  "frames/s received")
        values = (("input_fps", f"{input_fps:.1f}"), ("fps", f"{processed_fps:.1f}"),
                  ("processing_ms_median", f"{median_ms:.1f}"),
                  ("received", str(self.received)), ("processed", str(self.processed)),
                  ("dropped", str(self.dropped)), ("bad_frames", str(self.bad_frames)),
                  ("failures", str(self.failures)), ("tracked_faces", str(tracked_faces)))
        return Health(ok, message, values)
