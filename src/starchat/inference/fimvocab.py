"""The served model's FIM tokens as ids: read from a HF tokenizer (or its fim.json) or from a GGUF's vocabulary.

Each engine answers ``engine.fim()`` with a ``ServedFim`` (or None for a model without FIM tokens), so the
serving routes never guess a model's FIM format: a HF checkpoint's ``fim.json`` / tokenizer vocabulary
(``starchat.fim.load_spec``), or the ids llama.cpp itself reads from a GGUF (``llama_vocab_fim_pre`` ...,
which llama.cpp also fills in by token text for GGUFs written without the keys).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starchat import fim


@dataclass(frozen=True)
class ServedFim:
    """A model's FIM spec and every token it names as an id."""

    spec: fim.FimSpec
    ids: Mapping[str, int]

    @property
    def stop_ids(self) -> list[int]:
        return fim.stop_ids(self.spec, self.ids)

    @property
    def middle_id(self) -> int:
        return self.ids[self.spec.middle]


def from_tokenizer(model: str, tokenizer) -> ServedFim | None:
    """A HF model's FIM tokens: its saved ``fim.json`` first, else what its vocabulary spells."""
    spec = fim.load_spec(model, tokenizer)
    if spec is None:
        return None
    unk = tokenizer.unk_token_id

    def lookup(tok: str) -> int | None:
        tid = tokenizer.convert_tokens_to_ids(tok)
        # A tokenizer whose unk is a real token (<|endoftext|>) maps unknown strings to it: only accept
        # the unk id for the unk token itself.
        return None if tid is None or (tid == unk and tok != tokenizer.unk_token) else tid

    return ServedFim(spec, fim.token_ids(spec, lookup))


def from_llama_vocab(llama_cpp, vocab, n_vocab: int, piece: Callable[[int], str], eos: str) -> ServedFim | None:
    """A GGUF's FIM tokens as llama.cpp reads them: the ``fim_*`` ids (from the GGUF keys, or found by
    llama.cpp by their text), named by their text, plus the vocabulary's control tokens for the end and
    separators. None when llama.cpp knows no FIM prefix/suffix/middle for the model."""
    getters = {
        "pre": "llama_vocab_fim_pre",
        "suf": "llama_vocab_fim_suf",
        "mid": "llama_vocab_fim_mid",
        "pad": "llama_vocab_fim_pad",
        "rep": "llama_vocab_fim_rep",
        "sep": "llama_vocab_fim_sep",
    }
    found = {k: int(getattr(llama_cpp, fn)(vocab)) for k, fn in getters.items()}
    if min(found["pre"], found["suf"], found["mid"]) < 0:
        return None
    by_text: dict[str, int] = {}
    attr_control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    for t in range(n_vocab):  # control and user-defined tokens: where the end and separators live
        if llama_cpp.llama_vocab_get_attr(vocab, t) & attr_control:
            by_text.setdefault(piece(t), t)
    for t in found.values():
        if t >= 0:
            by_text[piece(t)] = t
    spec = fim.detect(set(by_text), _Eos(eos))
    if spec is None:
        return None
    # llama.cpp's own ids win where they name the same role (its keys are what its /infill uses).
    roles = {"pre": spec.prefix, "suf": spec.suffix, "mid": spec.middle}
    ids = {tok: by_text[tok] for tok in spec.tokens}
    for k, tok in roles.items():
        ids[tok] = found[k]
    return ServedFim(spec, ids)


class _Eos:
    """What ``fim.detect`` asks of a tokenizer: its eos text, the fallback end of a middle."""

    def __init__(self, eos: str) -> None:
        self.eos_token = eos or None
