"""Pydantic models of the OpenAI-compatible wire protocol: requests, responses, stream chunks and errors."""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChatMessage(BaseModel):
    # Extra keys (name, tool_call_id...) are accepted and ignored, as OpenAI clients send them.
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]  # "developer": newer clients' name for system
    content: str | list[dict] | None = ""

    def as_dict(self) -> dict:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}

    def text(self) -> str:
        """The content as plain text; list content keeps its text parts (images are not supported)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(BaseModel):
    """Fields shared by /v1/chat/completions and /v1/completions; unknown fields are accepted."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = Field(default=None, validate_default=True)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Outside the OpenAI spec, as in vLLM and TGI: the StarChat cards' sampling knobs.
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        if v is None:
            return []
        stops = [v] if isinstance(v, str) else list(v)
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return stops

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
            return v[0]
        return v


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
    kind: Literal["syntax", "security", "unclosed", "url"]
    message: str
    block: int | None = None
    line: int | None = None
    severity: str
    text: str  # the finding as one human-readable line


class ReviewResponse(BaseModel):
    object: Literal["review"] = "review"
    findings: list[ReviewFinding]
