"""Object ids with OpenAI's prefixes (file-…, ftjob-…, ftevent-…, ftckpt-…; evt_… and wh_… for webhooks).

The part after the prefix starts with the creation time in microseconds, in fixed-width hex, so
ids sort in creation order: lists page by id alone, with no ties.
"""

import secrets
import time


def new_id(prefix: str, separator: str = "-") -> str:
    """`separator`: OpenAI's eval and webhook objects use `_` (eval_…, evalrun_…, evt_…, wh_…)."""
    return f"{prefix}{separator}{time.time_ns() // 1000:014x}{secrets.token_hex(5)}"
