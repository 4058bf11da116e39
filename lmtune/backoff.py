"""The one back-off rule of the project: the pause after a failed try doubles from a first pause up
to a ceiling (the database tried again, progress kept for later, a webhook delivery, a full disk)."""

from __future__ import annotations


def pause_after(failures: int, first: float, most: float) -> float:
    """The pause before the next try once `failures` tries (1 or more) have failed in a row."""
    return min(first * 2 ** min(failures - 1, 64), most)
