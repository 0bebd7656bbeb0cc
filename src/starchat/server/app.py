"""The FastAPI app factory: OpenAI-compatible routes, auth, limits and the playground, over a scheduler."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from starchat.errors import StarchatError
from starchat.inference import SamplingParams
from starchat.inference.params import SEED_MAX
from starchat.server import infill
from starchat.server import protocol as P
from starchat.server.model_names import served_names, unknown_model
from starchat.server.scheduler import QueueFull, Ticket
from starchat.server.settings import ServerSettings
from starchat.server.timeouts import BodyDeadline

log = logging.getLogger("starchat.server")


class APIError(Exception):
    """An error answered with an OpenAI-style body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.body, self.headers = status, P.ErrorBody(message=message, type=type_, param=param,
                                                                   code=code), headers


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = P.ErrorResponse(error=P.ErrorBody(message=message, type=type_, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def make_scheduler(engine, settings: ServerSettings):
    """The scheduler the engine's backend names in `starchat.inference.backends` (rows of a transformers
    forward pass, slots of one llama.cpp context, vLLM's engine); any other engine runs one request at a time."""
    from starchat.inference.backends import backend_of
    from starchat.server.scheduler import one_at_a_time

    backend = backend_of(engine)
    factory = backend.scheduler_factory() if backend else one_at_a_time
    return factory(engine, settings)


def create_app(engine, settings: ServerSettings | None = None, scheduler=None) -> FastAPI:
    """An app serving ``engine``; ``scheduler`` defaults to `make_scheduler(engine, settings)`."""
    settings = settings or ServerSettings()
    settings.validate()
    scheduler = scheduler or make_scheduler(engine, settings)
    model_name = settings.model_name or engine.model_name
    names = served_names(model_name, engine, settings.model_aliases)

    from starchat.server.review_worker import ReviewBusy, ReviewRunner

    reviewer = ReviewRunner()

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        scheduler.stop()
        reviewer.close()

    # With a key, the API's description is not public either: /docs and /openapi.json are off.
    public_docs = settings.api_key is None
    app = FastAPI(title="starchat", lifespan=lifespan, docs_url="/docs" if public_docs else None,
                  redoc_url=None, openapi_url="/openapi.json" if public_docs else None)
    app.state.engine, app.state.settings, app.state.scheduler = engine, settings, scheduler
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout_s)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground():
        return resources.files("starchat.server").joinpath("static/playground.html").read_text("utf-8")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():  # browsers ask for it on every page; a 404 there only fills the logs
        icon = resources.files("starchat.server").joinpath("static/favicon.ico").read_bytes()
        return Response(icon, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})

    auth = _auth(settings.api_key)

    @app.get("/health")
    async def health(request: Request):
        """Public, for load balancers; the model and the load only to callers with the key (when one is set)."""
        try:
            await auth(request)
        except APIError:
            return {"status": "ok"}
        return {"status": "ok", "model": model_name, **scheduler.stats()}

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(auth)])

    @v1.get("/models")
    async def models() -> P.ModelList:
        return P.ModelList(data=[P.ModelCard(id=model_name, created=P.now(), context_length=engine.context_length)])

    @v1.post("/chat/completions")
    async def chat(req: P.ChatCompletionRequest, request: Request):
        _check_model(req.model, names, model_name)
        messages = [m.as_dict() for m in req.messages]
        try:
            prompt_ids = await asyncio.to_thread(engine.encode_prompt, messages)
        except StarchatError as e:
            raise APIError(400, str(e), param="messages") from None
        tickets = _submit(scheduler, engine, settings, req, prompt_ids)
        rid, created = P.new_id("chatcmpl"), P.now()
        if req.stream:
            return _sse(_chat_chunks(tickets, req, rid, created, model_name, len(prompt_ids)), tickets)
        texts = await _collect(tickets, request, settings.retry_after_s)
        choices = [P.ChatChoice(index=i, message={"role": "assistant", "content": t},
                                finish_reason=_reason(tk)) for i, (t, tk) in enumerate(zip(texts, tickets))]
        return P.ChatCompletion(id=rid, created=created, model=model_name, choices=choices,
                                usage=_usage(tickets, len(prompt_ids)))

    @v1.post("/completions")
    async def completions(req: infill.CompletionRequest, request: Request):
        _check_model(req.model, names, model_name)
        if req.suffix:  # fill in the middle: the prompt is the code before the cursor, the suffix after it
            return await infill.openai_fim(app, req, request)
        prompt_ids = await asyncio.to_thread(engine.encode_text, req.prompt) if req.prompt else []
        if not req.prompt or not prompt_ids:
            raise APIError(400, "the prompt is empty: send some text to complete", param="prompt")
        tickets = _submit(scheduler, engine, settings, req, prompt_ids, infill.raw_fim_stops(engine, prompt_ids))
        rid, created = P.new_id("cmpl"), P.now()
        if req.stream:
            return _sse(_text_chunks(tickets, req, rid, created, model_name, len(prompt_ids)), tickets)
        texts = await _collect(tickets, request, settings.retry_after_s)
        prefix = req.prompt if req.echo else ""
        choices = [P.CompletionChoice(index=i, text=prefix + t, finish_reason=_reason(tk))
                   for i, (t, tk) in enumerate(zip(texts, tickets))]
        return P.Completion(id=rid, created=created, model=model_name, choices=choices,
                            usage=_usage(tickets, len(prompt_ids)))

    @v1.post("/review")
    async def review_reply(req: P.ReviewRequest) -> P.ReviewResponse:
        # In its own bounded process, never on the threads that encode prompts (see review_worker).
        try:
            findings = await reviewer.review(req.text, req.finish_reason)
        except ReviewBusy as e:
            raise APIError(503, f"review: {e}", type_="server_error", code="review_unavailable",
                           headers={"Retry-After": str(settings.retry_after_s)}) from None
        return P.ReviewResponse(findings=[P.ReviewFinding(**f) for f in findings])

    app.include_router(v1)
    app.include_router(infill.router(auth))  # llama.cpp's /infill and /completion, for editors
    return app


def _auth(api_key: str | None):
    async def check(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer <key>` with the key given "
                                "to `starchat serve --api-key`", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
    return check


def _check_model(requested: str | None, names: frozenset[str], served: str) -> None:
    why = unknown_model(requested, names, served)
    if why:  # answering with another model than the one asked for would mislead the client
        raise APIError(404, why, param="model", code="model_not_found")


def _params(engine, settings: ServerSettings, req, prompt_len: int) -> SamplingParams:
    """The request's sampling parameters, checked against the caps and the model's context."""
    room = engine.context_length - prompt_len
    if room < 1:
        raise APIError(400, f"the prompt is {prompt_len} tokens but the model's context is "
                            f"{engine.context_length}: shorten the conversation", param="messages",
                       code="context_length_exceeded")
    wanted = req.wanted_tokens()
    if wanted is not None and wanted > settings.max_tokens_cap:
        raise APIError(400, f"max_tokens={wanted} is above this server's cap of {settings.max_tokens_cap}",
                       param="max_tokens")
    defaults = SamplingParams()
    given = {k: getattr(req, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty")
             if getattr(req, k) is not None}
    try:
        params = defaults.replace(**given, max_new_tokens=min(wanted or settings.default_max_tokens, room),
                                  stop=list(req.stop), seed=req.seed)
    except StarchatError as e:
        raise APIError(400, str(e)) from None
    return params


def _submit(scheduler, engine, settings, req, prompt_ids: list[int], stop_ids=()) -> list[Ticket]:
    """``stop_ids``: token ids that also end these generations (FIM's end tokens)."""
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
            tickets.append(scheduler.submit(Ticket(prompt_ids, p)))
    except QueueFull:
        for t in tickets:
            t.cancel()
        raise APIError(503, "the server is busy (queue full): retry later", type_="server_error",
                       code="overloaded", headers={"Retry-After": str(settings.retry_after_s)}) from None
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
        return APIError(503, r.error or "the server is busy: retry later", type_="server_error", code="overloaded",
                        headers={"Retry-After": str(retry_after_s)})
    return APIError(500, "generation failed on the server (details are in its log): retry, and report it "
                         "if it persists", type_="server_error")


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

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return JSONResponse(P.ErrorResponse(error=exc.body).model_dump(), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        if first.get("type") == "json_invalid":
            return error_response(400, f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}")
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "unsupported_field":  # an OpenAI feature we do not implement: 400, named
            where = ".".join(loc + [first["ctx"]["first"]])
            prefix = ".".join(loc) + ": " if loc else ""
            return error_response(400, f"{prefix}{first.get('msg')}", param=where, code="unsupported_parameter")
        where = ".".join(loc) or "body"
        msgs = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}"
                         for e in errs)
        return error_response(422, f"invalid request: {msgs}", param=where)

    @app.exception_handler(Exception)
    async def crashed(request, exc: Exception):
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        # The exception's text stays in the log: it can hold paths, prompts or other requests' data.
        return error_response(500, "internal server error (details are in the server log)", type_="server_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


class BodyLimit:
    """Pure ASGI middleware: 413 for bodies over ``max_bytes``, whether declared or sent chunked."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:  # the server holds the client to its declared length
            if declared.isdigit() and int(declared) > self.max_bytes:
                return await _too_large(self.max_bytes, send)
            return await self.app(scope, receive, send)
        # Chunked: read it all here (bounded), then hand it on as one message.
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return None  # the client went away
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _too_large(self.max_bytes, send)
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        return await self.app(scope, replay, send)


async def _too_large(limit: int, send) -> None:
    body = json.dumps(P.ErrorResponse(error=P.ErrorBody(
        message=f"the request body is over {limit} bytes", type="invalid_request_error")).model_dump()).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
