"""Fill-in-the-middle routes for editors: llama.cpp's ``/infill`` and ``/completion``, and ``suffix`` on /v1/completions.

The prompt is built from token ids by ``starchat.fim.build_prompt`` (PSM, as llama-server's ``/infill``): the
repository context (``input_extra``), ``<pre>`` prefix, ``<suf>`` suffix, ``<mid>``; no chat template. The model's
FIM tokens come from the engine (``engine.fim()``), and generation ends at them (``fim.stop_ids``) as well as at
the model's own end tokens. A prompt too long for the context keeps the code nearest the cursor within a budget
of ``n_ctx - n_predict`` tokens, and says so (``truncated``, ``fim``). Responses follow llama-server's
(``tools/server``: ``content``, ``stop``, ``stop_type``, ``tokens_predicted``, ``tokens_evaluated``...; streamed as
``data: {...}`` events ending with one whose ``stop`` is true).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import ClassVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from starchat import fim
from starchat.errors import StarchatError
from starchat.inference.params import SEED_MAX
from starchat.server import protocol as P

MAX_STOPS = 16  # editors send their template's end markers (Continue: 7 or more); each costs every token
MAX_EXTRA_FILES = 64  # repository-context chunks per request (the body limit bounds their size)
# llama-server request fields that only tune its own server (caching, timing, response trimming): accepted and
# ignored, with any value; starchat always reuses cached prompt prefixes.
LLAMA_IGNORED = {
    k: None
    for k in (
        "cache_prompt",
        "id_slot",
        "n_indent",
        "samplers",
        "t_max_prompt_ms",
        "t_max_predict_ms",
        "response_fields",
        "n_keep",
        "penalty_last_n",
        "repeat_last_n",
        "return_tokens",
        "timings_per_token",
        "model",
    )
}
# llama-server sampling fields starchat does not implement, with the values that ask for nothing.
LLAMA_NEUTRAL = {
    **LLAMA_IGNORED,
    "min_p": (None, 0, 0.0),
    "typical_p": (None, 1, 1.0),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "n_probs": (None, 0),
    "dynatemp_range": (None, 0, 0.0),
    "xtc_probability": (None, 0, 0.0),
    "dry_multiplier": (None, 0, 0.0),
    "ignore_eos": (None, False),
    "logit_bias": (None, [], {}),
    "grammar": (None, ""),
    "json_schema": (None, {}),
}


class CompletionRequest(P.CompletionRequest):
    """/v1/completions with OpenAI's ``suffix``: a non-empty suffix asks for the middle between prompt and suffix.

    Up to 16 stop sequences (OpenAI allows 4): editors send their FIM template's end markers."""

    suffix: str | None = None

    @field_validator("suffix")
    @classmethod
    def _suffix_text(cls, v):
        return v if v is None else P.check_text(v, "suffix")

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        return P.check_stops(v, MAX_STOPS)


class InfillFile(BaseModel):
    """One chunk of repository context in ``input_extra``."""

    model_config = ConfigDict(extra="forbid")
    filename: str = Field(default="", max_length=1024)
    text: str = ""

    @field_validator("filename", "text")
    @classmethod
    def _text(cls, v, info):
        return P.check_text(v, info.field_name)


class _LlamaSampling(P._Strict):
    """llama-server's sampling fields, under the names app._params reads (``wanted_tokens()``, ``n``...)."""

    neutral: ClassVar[dict] = LLAMA_NEUTRAL
    n_predict: int | None = Field(default=None, ge=1)  # llama-server's -1 (no limit) is refused: set a number
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    seed: int | None = Field(default=None, ge=-1, le=2**64 - 1)  # -1: random, as llama-server
    stop: list[str] | None = Field(default=None, validate_default=True)
    stream: bool = False
    n: ClassVar[int] = 1
    stream_options: ClassVar[None] = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        return P.check_stops(v, MAX_STOPS)

    @field_validator("seed")
    @classmethod
    def _seed(cls, v):
        # Tabby sends a 64-bit seed; the backends take 32 bits (the same seed still gives the same text).
        return None if v is None or v < 0 else v % (SEED_MAX + 1)

    @property
    def repetition_penalty(self) -> float | None:
        return self.repeat_penalty

    def wanted_tokens(self) -> int | None:
        return self.n_predict


class InfillRequest(_LlamaSampling):
    """POST /infill, as llama-server's."""

    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[InfillFile] = Field(default_factory=list, max_length=MAX_EXTRA_FILES)
    prompt: str = ""  # continues the prefix: the text typed since the cursor was last set

    @field_validator("input_prefix", "input_suffix", "prompt")
    @classmethod
    def _text(cls, v, info):
        return P.check_text(v, info.field_name)


class LlamaCompletionRequest(_LlamaSampling):
    """POST /completion, as llama-server's (what Tabby's ``llama.cpp/completion`` sends): a raw prompt, whose
    FIM token spellings (from Tabby's ``prompt_template``) are parsed as the model's control tokens."""

    prompt: str = Field(min_length=1)

    @field_validator("prompt")
    @classmethod
    def _text(cls, v):
        return P.check_text(v, "prompt")


def router(auth) -> APIRouter:
    r = APIRouter(dependencies=[Depends(auth)])
    r.add_api_route("/infill", infill, methods=["POST"])
    r.add_api_route("/completion", llama_completion, methods=["POST"])
    return r


def served_fim(engine, model: str, param: str):
    """The engine's FIM tokens, or a 400 naming the model."""
    from starchat.server.replies import APIError

    found = engine.fim()
    if found is None:
        try:
            fim.require(None, model)
        except StarchatError as e:
            raise APIError(400, str(e), param=param, code="fim_not_supported") from None
    return found


def raw_fim_stops(engine, prompt_ids: list[int]) -> list[int]:
    """A raw prompt that holds the FIM middle token (an editor's own FIM template) ends at the FIM end tokens."""
    found = engine.fim()
    return found.stop_ids if found is not None and found.middle_id in prompt_ids else []


async def _fim_prompt(
    app, found, *, prefix: str, suffix: str, prompt: str = "", extra=(), n_predict: int, param: str
) -> tuple[fim.FimPrompt, int]:
    """The PSM prompt's ids and its budget, ``n_ctx - n_predict`` tokens: the code nearest the cursor is kept."""
    from starchat.server.replies import APIError

    engine = app.state.engine
    budget = engine.context_length - n_predict
    try:
        fp = await asyncio.to_thread(
            engine.fim_prompt, prefix, suffix, prompt=prompt, extra=[e.model_dump() for e in extra], budget=budget
        )
        return fp, budget
    except StarchatError as e:
        raise APIError(
            400,
            f"{e} (n_ctx {engine.context_length} - n_predict {n_predict}): lower {param}",
            param=param,
            code="context_length_exceeded",
        ) from None


def _names(app) -> tuple:
    s = app.state.settings
    return app.state.engine, s, app.state.scheduler, s.model_name or app.state.engine.model_name


async def infill(req: InfillRequest, request: Request):
    app = request.app
    engine, settings, _, model = _names(app)
    found = served_fim(engine, model, "input_prefix")
    n_predict = _n_predict(req, settings)
    fp, budget = await _fim_prompt(
        app,
        found,
        prefix=req.input_prefix,
        suffix=req.input_suffix,
        prompt=req.prompt,
        extra=req.input_extra,
        n_predict=n_predict,
        param="n_predict",
    )
    return await _llama_reply(app, req, request, fp.ids, found.stop_ids, (fp, budget))


async def llama_completion(req: LlamaCompletionRequest, request: Request):
    from starchat.server.replies import APIError

    engine = request.app.state.engine
    ids = await asyncio.to_thread(engine.encode_text, req.prompt)
    if not ids:
        raise APIError(400, "the prompt is empty: send some text to complete", param="prompt")
    return await _llama_reply(request.app, req, request, ids, raw_fim_stops(engine, ids), None)


def _n_predict(req, settings) -> int:
    from starchat.server.replies import APIError

    n = req.n_predict or settings.default_max_tokens
    if n > settings.max_tokens_cap:
        raise APIError(400, f"n_predict={n} is above this server's cap of {settings.max_tokens_cap}", param="n_predict")
    return n


async def _llama_reply(app, req, request: Request, prompt_ids: list[int], stop_ids, fp):
    """Submit one generation and answer as llama-server does, streamed or not."""
    from starchat.server.replies import _collect, _submit

    engine, settings, scheduler, model = _names(app)
    t0 = time.perf_counter()
    ticket = _submit(scheduler, engine, settings, req, prompt_ids, stop_ids, editor=True)[0]
    if req.stream:
        return _llama_sse(ticket, req, model, len(prompt_ids), fp, t0)
    text = (await _collect([ticket], request, settings.retry_after_s))[0]
    return _final(text, ticket, req, model, len(prompt_ids), fp, t0)


def _final(content: str, ticket, req, model: str, prompt_len: int, fp, t0: float) -> dict:
    """llama-server's final completion object (``to_json_non_oaicompat``), with starchat's ``fim`` budget."""
    r, p = ticket.result, ticket.params
    out = {
        "index": 0,
        "content": content,
        "tokens": [],
        "id_slot": -1,
        "stop": True,
        "model": model,
        "tokens_predicted": r.completion_tokens,
        "tokens_evaluated": prompt_len,
        "generation_settings": {
            "n_predict": p.max_new_tokens,
            "temperature": p.temperature,
            "top_k": p.top_k,
            "top_p": p.top_p,
            "repeat_penalty": p.repetition_penalty,
            "seed": p.seed,
            "stop": list(p.stop),
            "stream": bool(req.stream),
        },
        "has_new_line": "\n" in content,
        "truncated": bool(fp and fp[0].truncated),
        # A stop string is reported as "eos" too: the schedulers report both as "stop".
        "stop_type": "limit" if r.finish_reason == "length" else "eos",
        "stopping_word": "",
        "timings": {
            "prompt_n": prompt_len,
            "predicted_n": r.completion_tokens,
            "total_ms": round((time.perf_counter() - t0) * 1000, 3),
        },
    }
    if fp is not None:  # starchat's own: the budget and what of each part it kept
        fp, budget = fp
        out["fim"] = {
            "budget": budget,
            "prefix_tokens": fp.prefix_tokens,
            "suffix_tokens": fp.suffix_tokens,
            "extra_tokens": fp.extra_tokens,
        }
    return out


def _llama_sse(ticket, req, model: str, prompt_len: int, fp, t0: float) -> StreamingResponse:
    """``data: {"content": ..., "stop": false}`` events, then the final object with ``stop: true``."""
    from starchat.server.replies import _failure

    async def body():
        try:
            async for d in ticket.deltas():  # a delta may hold several tokens: the count comes at the end
                yield _event(
                    {
                        "index": 0,
                        "content": d,
                        "tokens": [],
                        "stop": False,
                        "id_slot": -1,
                        "tokens_evaluated": prompt_len,
                    }
                )
            if ticket.result.finish_reason == "error":
                yield _event(P.ErrorResponse(error=_failure(ticket).body).model_dump())
                return
            yield _event(_final("", ticket, req, model, prompt_len, fp, t0))
        finally:  # normal end, or cancelled by a client disconnect
            ticket.cancel()

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def _event(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def openai_fim(app, req: CompletionRequest, request: Request):
    """/v1/completions with a suffix: the middle between ``prompt`` and ``suffix``, in OpenAI's response shape."""
    from starchat.server.replies import APIError, _collect, _reason, _sse, _submit, _text_chunks, _usage

    engine, settings, scheduler, model = _names(app)
    if req.echo:
        raise APIError(400, "echo cannot be combined with suffix", param="echo")
    found = served_fim(engine, model, "suffix")
    wanted = min(req.wanted_tokens() or settings.default_max_tokens, settings.max_tokens_cap)
    fp, _ = await _fim_prompt(app, found, prefix=req.prompt, suffix=req.suffix, n_predict=wanted, param="max_tokens")
    tickets = _submit(scheduler, engine, settings, req, fp.ids, found.stop_ids, editor=True)
    rid, created = P.new_id("cmpl"), P.now()
    if req.stream:
        return _sse(_text_chunks(tickets, req, rid, created, model, len(fp.ids)), tickets)
    texts = await _collect(tickets, request, settings.retry_after_s)
    choices = [
        P.CompletionChoice(index=i, text=t, finish_reason=_reason(tk)) for i, (t, tk) in enumerate(zip(texts, tickets))
    ]
    return P.Completion(id=rid, created=created, model=model, choices=choices, usage=_usage(tickets, len(fp.ids)))
