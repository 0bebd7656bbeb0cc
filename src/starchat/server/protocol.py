"""Pydantic models of the OpenAI-compatible wire protocol: requests, responses, stream chunks and errors."""

from __future__ import annotations

import time
import uuid
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from starchat.inference.params import MAX_STOP_CHARS, SEED_MAX

# OpenAI fields this server does not implement, with the values that ask for nothing (accepted).
# Any other value, or a field in neither the model nor this table, is refused with a 400 naming it:
# silently ignoring e.g. `tools` or `response_format` would hand back something the client did not ask for.
NEUTRAL = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "store": (None, False),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "service_tier": (None, "auto"),
    "user": None,
    "metadata": None,  # metadata about the caller: nothing to honour, any value is fine
}
MESSAGE_NEUTRAL = {
    "tool_calls": (None, []),
    "function_call": (None,),
    "refusal": (None,),
    "audio": (None,),
    "name": (None,),
}


def _known(given: dict, fields, neutral: dict) -> dict:
    """``given`` less its neutral extras; raises (answered 400) for keys that are neither fields nor neutral."""
    bad = [
        k
        for k, v in given.items()
        if k not in fields
        and (k not in neutral or (neutral[k] is not None and not any(_same(v, n) for n in neutral[k])))
    ]
    if bad:
        raise PydanticCustomError(
            "unsupported_field",
            "{fields}: not supported by this server; leave {it} out",
            {"fields": ", ".join(bad), "it": "it" if len(bad) == 1 else "them", "first": bad[0]},
        )
    return {k: v for k, v in given.items() if k in fields}


def _same(v, n) -> bool:
    if n is None or isinstance(n, bool) or isinstance(v, bool):
        return v is n or (type(v) is type(n) and v == n)
    return v == n


def check_text(s: str, where: str) -> str:
    """Refuse lone surrogates (valid JSON escapes, but not text any tokenizer can encode)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{where} holds a lone surrogate (U+{ord(s[e.start]):04X} at character {e.start}): send valid Unicode text"
        ) from None
    return s


def check_stops(v, limit: int) -> list[str]:
    """Stop strings: at most ``limit``, non-empty, valid Unicode, ``MAX_STOP_CHARS`` in all."""
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else list(v)
    if len(stops) > limit:
        raise ValueError(f"at most {limit} stop sequences are allowed, got {len(stops)}")
    if any(not s for s in stops):
        raise ValueError("stop sequences must be non-empty strings")
    if sum(len(s) for s in stops) > MAX_STOP_CHARS:
        raise ValueError(
            f"the stop sequences total {sum(len(s) for s in stops)} characters; at most {MAX_STOP_CHARS} are allowed"
        )
    return [check_text(s, f"stop[{i}]") for i, s in enumerate(stops)]


class _Strict(BaseModel):
    """A request object whose unknown keys are refused, naming them (`NEUTRAL` values excepted)."""

    model_config = ConfigDict(extra="forbid")  # `_known_keys` names what is refused first
    neutral: ClassVar[dict] = {}

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, v):
        return _known(v, cls.model_fields, cls.neutral) if isinstance(v, dict) else v


class ChatMessage(_Strict):
    neutral: ClassVar[dict] = MESSAGE_NEUTRAL
    role: Literal["system", "developer", "user", "assistant"]  # "developer": newer clients' name for system
    content: str | list[dict] | None = ""

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, v):
        """Only text: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
        if v is None:
            return v
        if isinstance(v, str):
            return check_text(v, "content")
        if not isinstance(v, list):
            raise ValueError("content must be a string or a list of text parts")
        for i, p in enumerate(v):
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                kind = p.get("type") if isinstance(p, dict) else type(p).__name__
                raise ValueError(
                    f'content part {i} is {kind!r}: only {{"type": "text", "text": '
                    "...} parts are supported (no images or audio)"
                )
            check_text(p["text"], f"content part {i}")
        return v

    def as_dict(self) -> dict:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}

    def text(self) -> str:
        """The content as plain text: a list of parts is joined (only text parts pass validation)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p["text"] for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(_Strict):
    """Fields shared by /v1/chat/completions and /v1/completions; unknown ones are refused (`NEUTRAL`)."""

    neutral: ClassVar[dict] = NEUTRAL
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = Field(default=None, validate_default=True)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Outside the OpenAI spec, as in vLLM and TGI: the StarChat cards' sampling knobs.
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        return check_stops(v, 4)  # OpenAI's limit

    def wanted_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_SamplingFields):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("send exactly one prompt per request (a list of one string is accepted)")
            v = v[0]
        return check_text(v, "prompt")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class ChatChoice(BaseModel):
    index: int
    message: dict
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatChunkChoice(BaseModel):
    index: int
    delta: dict
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "starchat"
    context_length: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ReviewRequest(BaseModel):
    """POST /v1/review, a starchat extension: check a reply for what the StarChat cards warn about.

    Links are listed as unverified but never requested: the server fetching URLs that clients send
    would let anyone make it reach internal addresses (SSRF)."""

    text: str
    # How generation ended (a completion's finish_reason): an open code fence is "cut off" only with "length".
    finish_reason: str | None = None


class ReviewFinding(BaseModel):
    kind: Literal["syntax", "security", "unclosed", "url", "limit"]  # limit: part not reviewed, too large
    message: str
    block: int | None = None
    line: int | None = None
    severity: str
    text: str  # the finding as one human-readable line


class ReviewResponse(BaseModel):
    object: Literal["review"] = "review"
    findings: list[ReviewFinding]
