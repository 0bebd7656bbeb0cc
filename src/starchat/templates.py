"""The StarChat dialogue format: rendering, the Jinja chat template, and tokenizer preparation.

The format is the model cards' one, turn after turn::

    <|system|>\n{system}<|end|>\n<|user|>\n{user}<|end|>\n<|assistant|>\n{reply}<|end|>\n

and an inference prompt ends in a bare ``<|assistant|>``. There is no registry of per-model
formats: a checkpoint carries its own ``chat_template``; the templates here are the two that
StarChat itself trained with (``starchat`` and ``alpaca``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starchat.errors import StarchatError
from starchat.fsio import write_text_atomic

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
# The order matters: on the StarCoder vocabulary (49,152 tokens) it gives IDs 49152..49155,
# the IDs of the released StarChat checkpoints (eos 49155 = <|end|>).
STARCHAT_SPECIAL_TOKENS = (SYSTEM, USER, ASSISTANT, END)
ROLES = ("system", "user", "assistant")


class TemplateError(StarchatError):
    """A dialogue that the format cannot express, or a template that does not exist."""


@dataclass
class DialogueTemplate:
    """One dialogue format, field-compatible with the original StarChat ``dialogue_template.json``.

    Rendering: ``{system_token}\\n{system}{end_token}\\n`` then, per turn,
    ``{role_token}\\n{content}{end_token}\\n``; the prompt form ends in ``{assistant_token}``.
    """

    name: str = "starchat"
    system: str = ""
    messages: list[dict[str, str]] | None = None
    system_token: str = SYSTEM
    user_token: str = USER
    assistant_token: str = ASSISTANT
    end_token: str = END

    @property
    def special_tokens(self) -> list[str]:
        """Tokens to add to the vocabulary, in the StarChat order (system, user, assistant, end)."""
        toks = [self.system_token, self.user_token, self.assistant_token, self.end_token]
        return [t for t in toks if t.startswith("<|") and t.endswith("|>")]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DialogueTemplate:
        known = set(cls.__dataclass_fields__)
        bad = [k for k in known & set(data) if k != "messages" and not isinstance(data[k], str)]
        if bad:
            raise TemplateError(f"dialogue template field {bad[0]!r} must be a string, got {data[bad[0]]!r}")
        # Unknown keys are ignored, as the original loader did.
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``dialogue_template.json`` (the original StarChat checkpoints' file)."""
        path = Path(directory) / "dialogue_template.json"
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DialogueTemplate:
        path = Path(path)
        if path.is_dir():
            path = path / "dialogue_template.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TemplateError(f"{path}: no dialogue_template.json here") from None
        except json.JSONDecodeError as e:
            raise TemplateError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        return cls.from_dict(data)


TEMPLATES: dict[str, DialogueTemplate] = {
    "starchat": DialogueTemplate(name="starchat"),
    # As in the original StarChat code: Alpaca's headers, still framed by <|system|> and <|end|>.
    # Unlike the original, the "### ..." headers stay plain text rather than special tokens.
    "alpaca": DialogueTemplate(
        name="alpaca",
        system="Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.",
        user_token="### Instruction:",
        assistant_token="### Response:",
    ),
}


def get_template(template: str | DialogueTemplate) -> DialogueTemplate:
    """A template by name (``starchat``, ``alpaca``), a path to a ``dialogue_template.json``, or itself."""
    if isinstance(template, DialogueTemplate):
        return template
    if template in TEMPLATES:
        return TEMPLATES[template]
    if os.path.exists(template):
        return DialogueTemplate.load(template)
    raise TemplateError(
        f"unknown template {template!r}: use one of {sorted(TEMPLATES)} or a path to a dialogue_template.json"
    )


def validate_messages(messages: Iterable[Mapping[str, Any]], where: str = "messages") -> list[dict[str, str]]:
    """Check OpenAI-style messages: known roles, string content, a system message only first."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise TemplateError(f"{where}[{i}]: a message needs 'role' and 'content' fields, got {m!r}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise TemplateError(f"{where}[{i}].role: {role!r} is not one of {ROLES}")
        if not isinstance(content, str):
            raise TemplateError(f"{where}[{i}].content: must be a string, got {type(content).__name__}")
        if role == "system" and i != 0:
            raise TemplateError(f"{where}[{i}]: a system message may only come first")
        out.append({"role": role, "content": content})
    return out


def render_segments(
    messages: Iterable[Mapping[str, Any]],
    template: str | DialogueTemplate = "starchat",
    add_generation_prompt: bool = False,
) -> list[tuple[str, bool]]:
    """The dialogue as ``(text, trained)`` pieces whose concatenation is :func:`render`'s string.

    ``trained`` is True exactly for each assistant reply plus its end token: the loss mask is
    built from these character spans together with the tokens, never by re-tokenizing.
    """
    t = get_template(template)
    msgs = validate_messages(messages)
    system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else t.system
    segs: list[tuple[str, bool]] = [(f"{t.system_token}\n{system}{t.end_token}\n", False)]
    for m in msgs:
        if m["role"] == "user":
            segs.append((f"{t.user_token}\n{m['content']}{t.end_token}\n", False))
        else:
            segs += [(f"{t.assistant_token}\n", False), (m["content"] + t.end_token, True), ("\n", False)]
    if add_generation_prompt:
        segs.append((t.assistant_token, False))
    return segs


def render(
    messages: Iterable[Mapping[str, Any]],
    template: str | DialogueTemplate = "starchat",
    add_generation_prompt: bool = False,
) -> str:
    """Render OpenAI-style messages in a dialogue format; the prompt form ends in ``<|assistant|>``."""
    return "".join(s for s, _ in render_segments(messages, template, add_generation_prompt))


def chat_template(template: str | DialogueTemplate = "starchat") -> str:
    """The same format as a Jinja ``chat_template`` with ``{% generation %}`` around each reply + end."""
    t = get_template(template)

    def lit(s: str) -> str:
        return json.dumps(s)  # a JSON string literal is a valid Jinja string literal

    return (
        f"{{%- set system = {lit(t.system)} -%}}"
        "{%- set loop_messages = messages -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
        "{%- endif -%}"
        f"{{{{- {lit(t.system_token + chr(10))} + system + {lit(t.end_token + chr(10))} -}}}}"
        "{%- for message in loop_messages -%}"
        "{%- if message['role'] == 'user' -%}"
        f"{{{{- {lit(t.user_token + chr(10))} + message['content'] + {lit(t.end_token + chr(10))} -}}}}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{{{- {lit(t.assistant_token + chr(10))} -}}}}"
        f"{{%- generation -%}}{{{{- message['content'] + {lit(t.end_token)} -}}}}{{%- endgeneration -%}}"
        "{{- '\\n' -}}"
        "{%- else -%}"
        "{{- raise_exception('role ' + message['role'] + ' is not system (first only), user or assistant') -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{- {lit(t.assistant_token)} -}}}}{{%- endif -%}}"
    )


def prepare_tokenizer(tokenizer, template: str | DialogueTemplate = "starchat", save_dir: str | None = None):
    """Make ``tokenizer`` speak a dialogue format; idempotent. Returns the tokenizer.

    - Adds the format's special tokens in the order system, user, assistant, end (on StarCoder's
      49,152-token vocabulary: IDs 49152..49155). Tokens already present are not added again.
    - Sets ``chat_template`` (with generation markers) and records the end token as the
      tokenizer's ``eos_token``, so pipelines and ``generation_config`` stop there.
    - With ``save_dir``, also writes a ``dialogue_template.json`` as the original checkpoints had.

    The model's embeddings must then be resized to ``len(tokenizer)`` (``starchat.train`` does it).
    """
    t = get_template(template)
    vocab = tokenizer.get_vocab()
    new = [tok for tok in t.special_tokens if tok not in vocab]
    if new:
        # Appending (not replacing) keeps any extra special tokens the base tokenizer already had.
        tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        # Padding is masked out of the loss and attention; reusing the base EOS avoids growing the vocab.
        tokenizer.pad_token = tokenizer.eos_token or t.end_token
    tokenizer.eos_token = t.end_token
    tokenizer.chat_template = chat_template(t)
    if save_dir is not None:
        t.save(save_dir)
    return tokenizer


def end_token_id(tokenizer, template: str | DialogueTemplate = "starchat") -> int:
    """The ID of the token that ends a turn (``<|end|>`` for StarChat)."""
    tok = get_template(template).end_token
    tid = tokenizer.convert_tokens_to_ids(tok)
    if tid is None or tid == tokenizer.unk_token_id:
        raise TemplateError(f"{tok!r} is not in the tokenizer's vocabulary: call prepare_tokenizer first")
    return tid


def common_prefix(a: Iterable[int], b: Iterable[int]) -> int:
    """How many leading token ids two sequences share (a chosen and a rejected dialogue; a new prompt and a
    cached one)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
