"""What the routes share: OpenAI-style errors, requests submitted to the scheduler, and replies collected whole
or streamed as server-sent events (the chat and completion routes in app.py, the FIM routes in infill.py)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from starchat.errors import StarchatError
from starchat.inference import SamplingParams
from starchat.inference.params import SEED_MAX
from starchat.server import protocol as P
from starchat.server.scheduler import QueueFull, Ticket
from starchat.server.settings import ServerSettings

log = logging.getLogger("starchat.server")


class APIError(Exception):
    """An error answered with an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.body, self.headers = (
            status,
            P.ErrorBody(message=message, type=type_, param=param, code=code),
            headers,
        )


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    body = P.ErrorResponse(error=P.ErrorBody(message=message, type=type_, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _params(engine, settings: ServerSettings, req, prompt_len: int) -> SamplingParams:
    """The request's sampling parameters, checked against the caps and the model's context."""
    room = engine.context_length - prompt_len
    if room < 1:
        raise APIError(
            400,
            f"the prompt is {prompt_len} tokens but the model's context is "
            f"{engine.context_length}: shorten the conversation",
            param="messages",
            code="context_length_exceeded",
        )
    wanted = req.wanted_tokens()
    if wanted is not None and wanted > settings.max_tokens_cap:
        raise APIError(
            400, f"max_tokens={wanted} is above this server's cap of {settings.max_tokens_cap}", param="max_tokens"
        )
    defaults = SamplingParams()
    given = {
        k: getattr(req, k)
        for k in ("temperature", "top_p", "top_k", "repetition_penalty")
        if getattr(req, k) is not None
    }
    try:
        params = defaults.replace(
            **given, max_new_tokens=min(wanted or settings.default_max_tokens, room), stop=list(req.stop), seed=req.seed
        )
    except StarchatError as e:
        raise APIError(400, str(e)) from None
    return params


def _submit(scheduler, engine, settings, req, prompt_ids: list[int], stop_ids=(), editor: bool = False) -> list[Ticket]:
    """``stop_ids``: token ids that also end these generations (FIM's end tokens); ``editor``: an editor's
    completion request, which supersedes the previous keystroke's (``Ticket.editor``)."""
    params = _params(engine, settings, req, len(prompt_ids))
    if stop_ids:
        params = params.replace(stop_token_ids=list(stop_ids))
    why = scheduler.refusal(len(prompt_ids), params.max_new_tokens)
    if why:  # it could never run here: say so now rather than queue it
        raise APIError(400, why, param="max_tokens", code="context_length_exceeded")
    tickets: list[Ticket] = []
    try:
        for i in range(req.n):
            # n choices with a seed must still differ from each other, and repeat across calls.
            p = params if params.seed is None or i == 0 else params.replace(seed=(params.seed + i) % (SEED_MAX + 1))
            tickets.append(scheduler.submit(Ticket(prompt_ids, p, editor=editor)))
    except QueueFull:
        for t in tickets:
            t.cancel()
        raise APIError(
            503,
            "the server is busy (queue full): retry later",
            type_="server_error",
            code="overloaded",
            headers={"Retry-After": str(settings.retry_after_s)},
        ) from None
    return tickets


async def _collect(tickets: list[Ticket], request: Request, retry_after_s: int) -> list[str]:
    """Await every ticket's text, cancelling them all if the client goes away first."""
    work = asyncio.gather(*(t.text() for t in tickets))
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=0.25)
            if done:
                break
            if await request.is_disconnected():
                raise asyncio.CancelledError
        texts = work.result()
    except BaseException:
        for t in tickets:
            t.cancel()
        work.cancel()
        raise
    for t in tickets:
        if t.result.finish_reason == "error":
            raise _failure(t, retry_after_s)
    return texts


def _failure(ticket: Ticket, retry_after_s: int = 2) -> APIError:
    """A failed generation as the client sees it: the reason when the request was at fault (4xx) or the
    server is full (503); otherwise a generic message, the details being in the server log only."""
    r = ticket.result
    if r.status < 500:
        return APIError(r.status, r.error or "the request was refused")
    if r.status == 503:
        return APIError(
            503,
            r.error or "the server is busy: retry later",
            type_="server_error",
            code="overloaded",
            headers={"Retry-After": str(retry_after_s)},
        )
    return APIError(
        500,
        "generation failed on the server (details are in its log): retry, and report it if it persists",
        type_="server_error",
    )


def _reason(ticket: Ticket) -> str:
    return "length" if ticket.result.finish_reason == "length" else "stop"


def _usage(tickets: list[Ticket], prompt_len: int) -> P.Usage:
    done = sum(t.result.completion_tokens for t in tickets)
    return P.Usage(prompt_tokens=prompt_len, completion_tokens=done, total_tokens=prompt_len + done)


async def _merged(tickets: list[Ticket]):
    """(choice index, delta) from every ticket as it comes; delta None marks that choice's end."""
    q: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, t: Ticket) -> None:
        async for d in t.deltas():
            await q.put((i, d))
        await q.put((i, None))

    tasks = [asyncio.create_task(pump(i, t)) for i, t in enumerate(tickets)]
    try:
        for _ in range(len(tickets)):
            while True:
                i, d = await q.get()
                yield i, d
                if d is None:
                    break
    finally:
        for task in tasks:
            task.cancel()


async def _chat_chunks(tickets, req, rid, created, model, prompt_len):
    def chunk(choices, usage=None):
        return P.ChatCompletionChunk(id=rid, created=created, model=model, choices=choices, usage=usage)

    yield chunk([P.ChatChunkChoice(index=i, delta={"role": "assistant", "content": ""}) for i in range(req.n)])
    async for i, d in _merged(tickets):
        if d is None:
            yield chunk([P.ChatChunkChoice(index=i, delta={}, finish_reason=_reason(tickets[i]))])
        else:
            yield chunk([P.ChatChunkChoice(index=i, delta={"content": d})])
    if req.stream_options and req.stream_options.include_usage:
        yield chunk([], _usage(tickets, prompt_len))


async def _text_chunks(tickets, req, rid, created, model, prompt_len):
    def chunk(choices, usage=None):
        return P.Completion(id=rid, created=created, model=model, choices=choices, usage=usage)

    if req.echo:
        yield chunk([P.CompletionChoice(index=i, text=req.prompt, finish_reason=None) for i in range(req.n)])
    async for i, d in _merged(tickets):
        if d is None:
            yield chunk([P.CompletionChoice(index=i, text="", finish_reason=_reason(tickets[i]))])
        else:
            yield chunk([P.CompletionChoice(index=i, text=d, finish_reason=None)])
    if req.stream_options and req.stream_options.include_usage:
        yield chunk([], _usage(tickets, prompt_len))


def _sse(chunks, tickets: list[Ticket]) -> StreamingResponse:
    """Server-sent events ending in [DONE]; the tickets are cancelled if the client goes away."""

    async def body():
        try:
            async for c in chunks:
                yield f"data: {c.model_dump_json(exclude_none=False)}\n\n"
            bad = [t for t in tickets if t.result.finish_reason == "error"]
            if bad:
                yield f"data: {P.ErrorResponse(error=_failure(bad[0]).body).model_dump_json()}\n\n"
            yield "data: [DONE]\n\n"
        finally:  # normal end, or cancelled by a client disconnect
            for t in tickets:
                t.cancel()

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
