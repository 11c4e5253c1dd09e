"""A short queue of camera frames between the subscription and the worker thread.

The subscription callback puts each arriving frame; the worker takes them
oldest first.  When the queue is full the oldest waiting frame is dropped,
so the worker is never more than ``size`` frames behind the camera: size 1
is "latest frame wins" (the lowest latency); a few frames absorb short
stalls (a slow frame, or several frames delivered at once after the Python
executor was held up) that would otherwise drop frames although the worker
keeps up on average.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Deque, Optional


class FrameQueue:
    """Bounded FIFO of frames, oldest dropped when full; thread-safe.

    :param size: frames held at most (>= 1).
    """

    def __init__(self, size: int) -> None:
        if int(size) < 1:
            raise ValueError(f"frame queue size must be >= 1, not {size}")
        self._frames: Deque[Any] = deque(maxlen=int(size))
        self._condition = threading.Condition()
        self._stopped = False

    @property
    def size(self) -> int:
        """Frames held at most."""
        return int(self._frames.maxlen or 0)

    def put(self, frame: Any) -> bool:
        """Add a frame; return True when the oldest waiting frame was dropped for it."""
        with self._condition:
            dropped = len(self._frames) == self._frames.maxlen
            self._frames.append(frame)
            self._condition.notify()
            return dropped

    def get(self, timeout_s: float = 0.5) -> Optional[Any]:
        """Return the oldest waiting frame, waiting up to ``timeout_s`` for one.

        :return: the frame; None when none came in time or the queue is stopped.
        """
        with self._condition:
            if not self._frames and not self._stopped:
                self._condition.wait(timeout_s)
            if self._stopped or not self._frames:
                return None
            return self._frames.popleft()

    def stop(self) -> int:
        """Drop the waiting frames and wake the worker for good; return how many were dropped."""
        with self._condition:
            self._stopped = True
            dropped = len(self._frames)
            self._frames.clear()
            self._condition.notify_all()
            return dropped

    @property
    def stopped(self) -> bool:
        """True after :meth:`stop`."""
        return self._stopped

    def __len__(self) -> int:
        with self._condition:
            return len(self._frames)
