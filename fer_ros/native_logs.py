"""Keep native libraries' start-up chatter off stderr.

LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on
its C++ stderr the first time a graph is prepared, which would break the
"one clear error line" promise of the CLIs.  Python cannot reach that
stream, so it is redirected at the file-descriptor level for the short
call that prints it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration of the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr (e.g. closed): nothing to hide
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
