"""Child processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """Run in a child before exec: SIGKILL it when its parent dies, so no training outlives a lost worker."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
