"""Fill-in-the-middle (FIM): the model's FIM tokens read from its tokenizer, and FIM prompts built from token ids.

There is no registry of per-model prompt templates: a checkpoint's vocabulary says which FIM tokens it has.
``FimSpec.from_tokenizer`` recognises the spellings of the families that pretrain with FIM (StarCoder,
StarCoder2 and SantaCoder ``<fim_prefix>``...; Qwen2.5-Coder ``<|fim_prefix|>``...; CodeLlama's
``<PRE> <SUF> <MID> <EOT>``; DeepSeek-Coder's ``<｜fim▁begin｜>``...), with the repository and file separators
where the vocabulary has them. starchat saves the spec as ``fim.json`` beside every model it writes, so chat,
serve, eval and the GGUF export read one spec (``load_spec``).

Orders (from "Efficient Training of Language Models to Fill in the Middle", Bavarian et al. 2022):

- PSM: ``<pre> prefix <suf> suffix <mid> middle <eot>``
- SPM, in the variant StarCoder was pretrained on (bigcode's Megatron, SPM "variant 2"):
  ``<pre> <suf> suffix <mid> prefix middle <eot>``, so the middle continues the prefix's text directly.

Prompts are built from token ids (``build_prompt``): each piece of user text is encoded as plain text, so code
that spells ``<fim_middle>`` or ``<|end|>`` never becomes a control token. Serving and editors always use PSM
(as llama-server's ``/infill`` does); SPM is a training-time augmentation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from starchat.errors import StarchatError
from starchat.fsio import write_text_atomic

FIM_FILE = "fim.json"
ORDERS = ("psm", "spm")


class FimError(StarchatError):
    """A model without FIM tokens asked to fill in the middle, or a malformed ``fim.json``."""


@dataclass(frozen=True)
class FimSpec:
    """One model's FIM format: token strings (as in its vocabulary), what ends a middle, the separators."""

    family: str
    prefix: str
    suffix: str
    middle: str
    eot: str  # appended after the middle in training; the first stop token
    pad: str | None = None
    repo_name: str | None = None
    file_sep: str | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)  # every token that ends a middle, eot first

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, data: Mapping, where: str = FIM_FILE) -> FimSpec:
        if not isinstance(data, Mapping):
            raise FimError(f"{where}: expected a JSON object, got {type(data).__name__}")
        for key in ("family", "prefix", "suffix", "middle", "eot"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise FimError(f"{where}: field {key!r} must be a non-empty string, got {data.get(key)!r}")
        for key in ("pad", "repo_name", "file_sep"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise FimError(f"{where}: field {key!r} must be a string or null, got {data[key]!r}")
        stop = data.get("stop") or [data["eot"]]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise FimError(f"{where}: field 'stop' must be a list of token strings, got {stop!r}")
        known = {
            k: data.get(k) for k in ("family", "prefix", "suffix", "middle", "eot", "pad", "repo_name", "file_sep")
        }
        return cls(**known, stop=tuple(dict.fromkeys([data["eot"], *stop])))

    @property
    def tokens(self) -> list[str]:
        """Every token string the spec names (each must be one token of the vocabulary)."""
        return list(
            dict.fromkeys(
                t
                for t in (
                    self.prefix,
                    self.suffix,
                    self.middle,
                    self.eot,
                    self.pad,
                    self.repo_name,
                    self.file_sep,
                    *self.stop,
                )
                if t
            )
        )

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / FIM_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def from_tokenizer(cls, tokenizer) -> FimSpec | None:
        """The FIM format the tokenizer's vocabulary spells, or None for a model without FIM tokens."""
        return detect(set(tokenizer.get_vocab()), tokenizer)


# (family, prefix, suffix, middle, pad, repo_name candidates, file_sep candidates, explicit eot or None).
# StarCoder 1 spells the separators <reponame>/<filename>; StarCoder2 <repo_name>/<file_sep>.
_FAMILIES: list[tuple[str, str, str, str, str | None, tuple[str, ...], tuple[str, ...], str | None]] = [
    (
        "starcoder",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "<fim_pad>",
        ("<repo_name>", "<reponame>"),
        ("<file_sep>", "<filename>"),
        None,
    ),
    ("santacoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>", "<fim-pad>", (), (), None),
    (
        "qwen",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        "<|fim_pad|>",
        ("<|repo_name|>",),
        ("<|file_sep|>",),
        None,
    ),
    ("codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", None, (), (), "▁<EOT>"),
    ("codellama", "<PRE>", "<SUF>", "<MID>", None, (), (), "<EOT>"),
    ("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", None, (), (), "<|EOT|>"),
]
# Tokens that end a document in the families above; the first present one ends a middle.
_DOC_ENDS = ("<|endoftext|>", "<｜end▁of▁sentence｜>", "</s>")
# starchat's own format (added to a base without FIM tokens): StarCoder's spellings.
ADDED = ("<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>")  # StarCoder's id order


def detect(vocab: set[str], tokenizer=None) -> FimSpec | None:
    """The spec for a vocabulary (a set of token strings); ``tokenizer`` supplies the eos as a fallback end."""
    for family, pre, suf, mid, pad, repos, seps, eot in _FAMILIES:
        if not {pre, suf, mid} <= vocab:
            continue
        if eot is None or eot not in vocab:
            eot = next((t for t in _DOC_ENDS if t in vocab), None) or getattr(tokenizer, "eos_token", None)
        if not eot:
            continue
        repo = next((t for t in repos if t in vocab), None)
        sep = next((t for t in seps if t in vocab), None)
        pad_tok = pad if pad in vocab else None
        # A FIM token that is not the end still ends a middle if the model emits it: it never belongs in code.
        stop = [eot, *(t for t in (pad_tok, repo, sep, "<|end|>") if t and t in vocab)]
        return FimSpec(family, pre, suf, mid, eot, pad_tok, repo, sep, tuple(dict.fromkeys(stop)))
    return None


def add_fim_tokens(tokenizer) -> FimSpec:
    """Give a tokenizer without FIM tokens StarCoder's four (prefix, middle, suffix, pad, in StarCoder's order),
    as special tokens; idempotent. Returns the spec. Call after ``templates.prepare_tokenizer``, so the dialogue
    tokens keep their ids; resize the model's embeddings to ``len(tokenizer)`` afterwards (``starchat.train``
    initialises the new rows as it does the dialogue tokens').

    The middle ends at the base's ``<|endoftext|>`` where it has one (SmolLM2, StarCoder), else at its eos.
    """
    spec = FimSpec.from_tokenizer(tokenizer)
    if spec is not None:
        return spec
    vocab = tokenizer.get_vocab()
    new = [t for t in ADDED if t not in vocab]
    tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
    spec = FimSpec.from_tokenizer(tokenizer)  # StarCoder's spellings: read back like any StarCoder vocabulary
    if spec is None:
        raise FimError(
            "the tokenizer has neither <|endoftext|> nor an eos token to end a middle: call "
            "templates.prepare_tokenizer first"
        )
    return spec


def load_spec(model_dir: str | os.PathLike, tokenizer=None) -> FimSpec | None:
    """The spec saved with a model (``fim.json``), else the one its tokenizer's vocabulary spells, else None."""
    path = Path(model_dir) / FIM_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FimError(
                f"{path}: not valid JSON ({e}); delete it to read the FIM tokens from the tokenizer"
            ) from None
        return FimSpec.from_dict(data, where=str(path))
    return FimSpec.from_tokenizer(tokenizer) if tokenizer is not None else None


def require(spec: FimSpec | None, model: str) -> FimSpec:
    """The spec, or a one-line error naming the model (for /infill, suffix, eval infill and recipes)."""
    if spec is None:
        raise FimError(
            f"{model}: this model has no fill-in-the-middle tokens (<fim_prefix> or similar); use a "
            "FIM-pretrained base (StarCoder, Qwen2.5-Coder, ...) or train with `data.fim` (see docs: FIM)"
        )
    return spec


def encode_plain(tokenizer, text: str) -> list[int]:
    """``text`` as ids of a Hugging Face tokenizer, no BOS, and as plain text: code spelling ``<fim_middle>``
    or ``<|end|>`` never becomes a control token (prompts and training rows are built from these)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    before = getattr(backend, "encode_special_tokens", None)
    try:
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    finally:  # transformers leaves the fast tokenizer's flag set; code using the backend directly must not see it
        if before is not None:
            backend.encode_special_tokens = before


def token_ids(spec: FimSpec, lookup: Callable[[str], int | None]) -> dict[str, int]:
    """Each named token's id through ``lookup`` (a tokenizer's ``convert_tokens_to_ids``, or a GGUF vocab map);
    a token the vocabulary lacks is a FimError naming it."""
    out = {}
    for tok in spec.tokens:
        tid = lookup(tok)
        if tid is None or (isinstance(tid, int) and tid < 0):
            raise FimError(f"FIM token {tok!r} of the {spec.family} format is not in the model's vocabulary")
        out[tok] = int(tid)
    return out


@dataclass
class FimPrompt:
    """A PSM prompt's ids and what the budget kept of each part (tokens), for logs and the response."""

    ids: list[int]
    prefix_tokens: int
    suffix_tokens: int
    extra_tokens: int
    truncated: bool


def build_prompt(
    spec: FimSpec,
    ids: Mapping[str, int],
    encode: Callable[[str], list[int]],
    *,
    prefix: str,
    suffix: str,
    prompt: str = "",
    extra: Sequence[Mapping[str, str]] = (),
    budget: int | None = None,
    bos: Sequence[int] = (),
) -> FimPrompt:
    """The PSM prompt as ids: repository context, then ``<pre> prefix+prompt <suf> suffix <mid>``.

    ``encode`` turns text into ids without parsing control tokens; ``ids`` is ``token_ids(spec, ...)``;
    ``extra`` holds ``{"filename", "text"}`` files of repository context, joined with the file separator
    (with llama-server's fallback header where the model has none). ``prompt`` continues the prefix (llama.cpp's
    /infill field). ``budget`` caps the prompt's length: the code nearest the cursor is kept (the end of the
    prefix, the start of the suffix); the suffix gets at most a quarter of the budget, the prefix the rest, and
    repository context only what is left, its end first (llama-server divides it the same way).
    """
    pre_ids, suf_ids, p_ids = encode(prefix), encode(suffix), encode(prompt) if prompt else []
    extra_ids = _extra_ids(spec, ids, encode, extra)
    fixed = len(bos) + 3 + len(p_ids)
    truncated = False
    if budget is not None:
        if fixed >= budget:
            raise FimError(f"the prompt field alone ({len(p_ids)} tokens) does not fit the {budget}-token budget")
        room = budget - fixed
        n_suf = min(len(suf_ids), room // 4)
        n_pre = min(len(pre_ids), room - n_suf)
        n_suf = min(len(suf_ids), room - n_pre)  # a short prefix leaves its room to the suffix
        n_extra = min(len(extra_ids), room - n_pre - n_suf)
        truncated = (n_pre, n_suf, n_extra) != (len(pre_ids), len(suf_ids), len(extra_ids))
        pre_ids = pre_ids[len(pre_ids) - n_pre :]
        suf_ids = suf_ids[:n_suf]
        extra_ids = extra_ids[len(extra_ids) - n_extra :]
    out = [*bos, *extra_ids, ids[spec.prefix], *pre_ids, *p_ids, ids[spec.suffix], *suf_ids, ids[spec.middle]]
    return FimPrompt(out, len(pre_ids), len(suf_ids), len(extra_ids), truncated)


def header_ids(spec: FimSpec, ids: Mapping[str, int], encode: Callable[[str], list[int]]) -> list[int]:
    """The repository header every prompt starts with when no files are sent (``<repo_name>myproject\\n<file_sep>
    filename\\n`` where the model has the separators, else nothing): training rows start with it too, so a model
    taught FIM here sees at training time the prompt that serving, ``eval infill`` and llama-server send."""
    return _extra_ids(spec, ids, encode, ())


def _extra_ids(spec: FimSpec, ids: Mapping[str, int], encode, extra: Sequence[Mapping[str, str]]) -> list[int]:
    """Repository context as ids: ``<repo_name>myproject\\n``, ``<file_sep>name\\ntext`` per file, then
    ``<file_sep>filename\\n`` for the file being edited: llama-server's layout, sent (budget allowing) even without
    files wherever the model has the separators, so a request gives the prompt llama-server builds (except that a
    BOS, for the models that want one, stays first here; llama-server puts the context before it)."""
    out: list[int] = []
    if spec.repo_name:
        out += [ids[spec.repo_name], *encode("myproject\n")]
    for chunk in extra:
        name, text = chunk.get("filename") or "tmp", chunk.get("text") or ""
        if spec.file_sep:
            out += [ids[spec.file_sep], *encode(name + "\n")]
        else:
            out += encode("\n\n--- snippet ---\n\n")  # llama-server's separator for models without one
        out += encode(text)
    if spec.file_sep:  # the file being edited follows; its name is not sent by the editors
        out += [ids[spec.file_sep], *encode("filename\n")]
    return out


def training_ids(
    spec: FimSpec,
    ids: Mapping[str, int],
    encode: Callable[[str], list[int]],
    *,
    prefix: str,
    middle: str,
    suffix: str,
    order: str = "psm",
    bos: Sequence[int] = (),
) -> tuple[list[int], list[bool]]:
    """A FIM training row's ids and which of them are the middle plus its end (the part an editor asks for).

    PSM: ``<pre> P <suf> S <mid> M <eot>``; SPM (StarCoder's variant): ``<pre> <suf> S <mid> P M <eot>``. Both
    after ``bos`` and the repository header (``header_ids``), as ``build_prompt`` lays out a request: a PSM
    row's context is exactly the prompt an editor's request for that middle gets.
    """
    if order not in ORDERS:
        raise FimError(f"FIM order {order!r}: use one of {ORDERS}")
    p, m, s = encode(prefix), encode(middle), encode(suffix)
    top = [*bos, *header_ids(spec, ids, encode)]
    if order == "psm":
        head = [*top, ids[spec.prefix], *p, ids[spec.suffix], *s, ids[spec.middle]]
    else:
        head = [*top, ids[spec.prefix], ids[spec.suffix], *s, ids[spec.middle], *p]
    tail = [*m, ids[spec.eot]]
    return head + tail, [False] * len(head) + [True] * len(tail)


def gguf_metadata(spec: FimSpec, ids: Mapping[str, int]) -> dict[str, int]:
    """The GGUF keys llama.cpp reads the FIM tokens from (``llama_vocab_fim_pre`` ... ``_sep``)."""
    keys = {
        "pre": spec.prefix,
        "suf": spec.suffix,
        "mid": spec.middle,
        "pad": spec.pad,
        "rep": spec.repo_name,
        "sep": spec.file_sep,
    }
    return {f"tokenizer.ggml.fim_{k}_token_id": ids[t] for k, t in keys.items() if t}


def stop_ids(spec: FimSpec, ids: Mapping[str, int]) -> list[int]:
    """The ids that end a middle, the end token first."""
    return [ids[t] for t in spec.stop]
