"""One progress bar for a batch: sessions done, frames per second over all workers, ETA."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional

#: Seconds between redraws of the bar's figures.
REFRESH_S = 0.5


class StudyProgress:
    """The batch's progress on stderr, fed by the workers' events.

    The bar counts sessions; its postfix gives the frames read per second
    over all workers since the first frame, and the time left: frames still
    to read (the rest of each started session, and for each session not yet
    started the mean length of those started) at that rate.

    :param sessions: sessions in the batch.
    :param enabled: False shows nothing (``--quiet``).
    """

    def __init__(self, sessions: int, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.sessions = sessions
        self.totals: Dict[Any, int] = {}
        self.read: Dict[Any, int] = {}
        self.done: Dict[Any, bool] = {}
        self.first_frame_at: Optional[float] = None
        self.shown_at = 0.0
        self.bar = tqdm(total=sessions, disable=not enabled, file=sys.stderr, unit="session",
                        desc="sessions", dynamic_ncols=True, leave=False,
                        bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}")

    def event(self, event: Dict[str, Any]) -> None:
        """Take a worker's event: ``{"task", "total"}`` at a start, ``{"task", "read"}``."""
        key = event.get("task")
        if key is None or self.done.get(key):
            return
        if "total" in event:
            self.totals[key] = int(event["total"])
            self.read.setdefault(key, 0)
        if "read" in event:
            self.read[key] = max(self.read.get(key, 0), int(event["read"]))
            if self.first_frame_at is None:
                self.first_frame_at = time.perf_counter()
        self._show()

    def finished(self, key: Any, frames_read: Optional[int] = None) -> None:
        """Count a session as done (analysed, failed or already complete).

        :param key: the session's task key.
        :param frames_read: frames it read, None when it read none (skipped).
        """
        if self.done.get(key):
            return
        self.done[key] = True
        if frames_read is not None:
            self.read[key] = max(self.read.get(key, 0), frames_read)
            self.totals[key] = self.read[key]
        self.bar.update(1)
        self._show(force=True)

    def frames_per_s(self) -> Optional[float]:
        """Frames read per second over all workers since the first frame."""
        if self.first_frame_at is None:
            return None
        elapsed = time.perf_counter() - self.first_frame_at
        return sum(self.read.values()) / elapsed if elapsed > 0 else None

    def seconds_left(self) -> Optional[float]:
        """Estimated seconds to the end of the batch (None while unknown)."""
        rate = self.frames_per_s()
        known = [total for total in self.totals.values() if total > 0]
        if not rate or not known:
            return None
        left: float = sum(max(0, self.totals[key] - self.read.get(key, 0))
                          for key in self.totals if not self.done.get(key))
        unstarted = self.sessions - len(set(self.totals) | set(self.done))
        left += max(0, unstarted) * sum(known) / len(known)
        return left / rate

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.shown_at < REFRESH_S:
            return
        self.shown_at = now
        rate, left = self.frames_per_s(), self.seconds_left()
        parts = [f"{rate:.0f} frames/s" if rate else "starting",
                 f"ETA {self.bar.format_interval(left)}" if left is not None else ""]
        self.bar.set_postfix_str(", ".join(p for p in parts if p), refresh=True)

    def close(self) -> None:
        """Remove the bar."""
        self.bar.close()
