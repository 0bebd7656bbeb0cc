"""Choosing and applying a model's chat format: its own template first, ours only when asked."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starchat.templates import DialogueTemplate, TemplateError, get_template, render, validate_messages


@dataclass
class ChatFormat:
    """How messages become prompt text for one model.

    Exactly one of ``jinja`` (a chat_template from the tokenizer or GGUF) and ``dialogue``
    (a StarChat ``dialogue_template.json`` or a named template) is set.
    """

    source: str  # where it came from, for messages: "tokenizer", "gguf", a file path, or a name
    jinja: str | None = None
    dialogue: DialogueTemplate | None = None
    bos_token: str = ""
    eos_token: str = ""

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        msgs = validate_messages(messages)
        if self.dialogue is not None:
            return render(msgs, self.dialogue, add_generation_prompt=add_generation_prompt)
        from transformers.utils.chat_template_utils import render_jinja_template

        try:
            rendered, _ = render_jinja_template(
                conversations=[msgs],
                chat_template=self.jinja,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except Exception as e:  # jinja errors, raise_exception() in the template
            raise TemplateError(f"the {self.source} chat template failed on these messages: {e}") from None
        return rendered[0]

    def render_pieces(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, control: Sequence[str] = ()
    ) -> list[tuple[str, bool]]:
        """The rendered prompt as ``(text, is_template)`` pieces: engines tokenize template pieces with
        special-token parsing and message content without it, so text a user or system prompt types
        (``<|im_start|>``, ``<|end|>``) stays text and only the template's own markers are control tokens.

        ``control``: the model's control-token texts. When no content holds one (the usual case) the
        prompt is one template piece, tokenized exactly as before. Otherwise each content is wrapped in
        random markers, the template rendered again, and the text cut at the markers. Not covered: a
        template that rewrites or drops the markers; that is refused rather than risk parsing content.
        """
        msgs = validate_messages(messages)
        if not any(c in m["content"] for m in msgs for c in control if c):
            return [(self.render(msgs, add_generation_prompt), True)]
        nonce = secrets.token_hex(8)
        start, end = f"\ue000{nonce}\ue001", f"\ue002{nonce}\ue003"
        marked = self.render([{**m, "content": f"{start}{m['content']}{end}"} for m in msgs], add_generation_prompt)
        pieces, pos = [], 0
        while (i := marked.find(start, pos)) >= 0:
            j = marked.find(end, i)
            if j < 0 or marked.find(start, i + len(start), j) >= 0:
                break
            pieces += [(marked[pos:i], True), (marked[i + len(start) : j], False)]
            pos = j + len(end)
        pieces.append((marked[pos:], True))
        if any(start in t or end in t for t, _ in pieces):
            raise TemplateError(
                f"the {self.source} chat template transforms message content, so content holding "
                "control-token text cannot be kept as text: remove it from the messages"
            )
        return [(t, special) for t, special in pieces if t]

    @property
    def end_token(self) -> str | None:
        """The text of the end-of-turn token, when the format names one (``<|end|>`` for StarChat)."""
        return (self.dialogue.end_token or None) if self.dialogue is not None else None


def select_format(
    template: str | None,
    own_template: str | None,
    model: str | None,
    bos_token: str = "",
    eos_token: str = "",
    own_source: str = "tokenizer",
) -> ChatFormat:
    """The format to use, in this order: ``template`` if given (a name or a dialogue_template.json path);
    the model's own chat template; the ``dialogue_template.json`` of an original StarChat checkpoint."""
    if template is not None:
        return ChatFormat(
            source=f"template {template!r}", dialogue=get_template(template), bos_token=bos_token, eos_token=eos_token
        )
    if own_template:
        return ChatFormat(source=own_source, jinja=own_template, bos_token=bos_token, eos_token=eos_token)
    path = find_dialogue_template(model) if model else None
    if path is not None:
        return ChatFormat(
            source=str(path), dialogue=DialogueTemplate.load(path), bos_token=bos_token, eos_token=eos_token
        )
    raise TemplateError(
        f"{model or 'the model'} has no chat template (none in its {own_source}, no dialogue_template.json): "
        "pass --template starchat (or a path to a dialogue_template.json) to choose one"
    )


def find_dialogue_template(model: str) -> Path | None:
    """The model's ``dialogue_template.json``: in its directory, or on the hub for a hub ID."""
    if os.path.isdir(model):
        path = Path(model) / "dialogue_template.json"
        return path if path.is_file() else None
    if os.path.exists(model):
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, "dialogue_template.json"))
    except Exception:  # not on the hub, offline, or no such file: the caller reports it
        return None
