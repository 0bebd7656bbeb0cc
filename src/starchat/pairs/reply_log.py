"""The resume log of `starchat data pairs`: one JSON line per scored reply, checked line by line when read back.

A rerun trusts what it reads here (the replies are not sampled again), so a damaged line is an error naming
FILE:LINE and how to recover, never a traceback later on and never a silently skipped reply. Only the bytes
after the last newline are dropped without asking: a write cut by an interruption ends there.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError
from starchat.eval.humaneval import SampleLog
from starchat.eval.scoring import DEFAULT_WEIGHTS

logger = logging.getLogger("starchat.data")

MAX_LINE_BYTES = 4 << 20
"""A reply is bounded by --max-new-tokens; a line this long is not one the run wrote."""
FLAG_NAMES = (*DEFAULT_WEIGHTS, "empty")
FIELDS = (
    ("task_id", (str,), "a string"),
    ("sample_index", (int,), "an integer >= 0"),
    ("reply", (str,), "a string"),
    ("finish_reason", (str, type(None)), "a string or null"),
    ("completion_tokens", (int, type(None)), "an integer or null"),
    ("flags", (dict,), "an object"),
)
"""What selecting and counting the pairs reads from a line: (field, JSON types, what it must be)."""


class ReplyLog(SampleLog):
    """``rows[(task_id, sample_index)]``: the replies logged so far; ``add`` appends one and flushes it. Eval's
    SampleLog with a loader that checks every line (its files' names: older partial runs still resume)."""

    IGNORED_SETTINGS = ()  # every setting of `data pairs` decides what its replies are

    def __init__(self, work: Path, identity: dict[str, Any]):
        """``work``: the OUTPUT.partial folder; ``identity``: the settings a resumed run must share."""
        self.work = work
        super().__init__(work, identity)

    def _load(self) -> None:
        lines: dict[tuple[str, int], int] = {}
        end = 0  # byte offset after the last complete line
        with self.path.open("rb") as f:
            for n in itertools.count(1):
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw.endswith(b"\n"):
                    if len(raw) > MAX_LINE_BYTES:
                        raise self._damaged(n, f"a line longer than {MAX_LINE_BYTES} bytes")
                    break  # end of file, or a line cut by an interruption (dropped below)
                row = self._parse(raw, n)
                key = (row["task_id"], row["sample_index"])
                if key in lines:
                    raise StarchatError(
                        f"{self.path}:{n}: reply {key[1]} of prompt {key[0]!r} is logged twice "
                        f"(also on line {lines[key]}); the log has one line per reply: delete one "
                        f"of the two lines and rerun, or delete {self.work} to start over"
                    )
                lines[key], self.rows[key] = n, row
                end = f.tell()
        if raw:
            logger.warning("%s:%d: dropped a line cut by an interruption; that reply is sampled again", self.path, n)
            os.truncate(self.path, end)

    def _damaged(self, n: int, what: str) -> StarchatError:
        return StarchatError(
            f"{self.path}:{n}: {what}; this resume log is damaged: delete that line (its reply "
            f"is sampled again) or delete {self.work} to start over, then rerun"
        )

    def _parse(self, raw: bytes, n: int) -> dict[str, Any]:
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise self._damaged(n, "not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise self._damaged(n, f"not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise self._damaged(n, f"a {type(row).__name__}, not a JSON object")
        for key, types, what in FIELDS:
            value = row.get(key)
            if not isinstance(value, types) or isinstance(value, bool) or (key == "sample_index" and value < 0):
                raise self._damaged(n, f"field {key!r} must be {what}, got {json.dumps(value)[:80]}")
        for name in FLAG_NAMES:
            value = row["flags"].get(name)
            ok = value is None or isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value))
            if not ok:
                raise self._damaged(
                    n, f"field 'flags.{name}' must be a number, true/false or null, got {json.dumps(value)[:80]}"
                )
        return row
