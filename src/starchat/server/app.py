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
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from starchat.errors import StarchatError
from starchat.server import infill
from starchat.server import protocol as P
from starchat.server.model_names import served_names, unknown_model
from starchat.server.replies import (
    APIError,
    _chat_chunks,
    _collect,
    _reason,
    _sse,
    _submit,
    _text_chunks,
    _usage,
    error_response,
)
from starchat.server.settings import ServerSettings
from starchat.server.timeouts import BodyDeadline

log = logging.getLogger("starchat.server")


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
    app = FastAPI(
        title="starchat",
        lifespan=lifespan,
        docs_url="/docs" if public_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if public_docs else None,
    )
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
        choices = [
            P.ChatChoice(index=i, message={"role": "assistant", "content": t}, finish_reason=_reason(tk))
            for i, (t, tk) in enumerate(zip(texts, tickets))
        ]
        return P.ChatCompletion(
            id=rid, created=created, model=model_name, choices=choices, usage=_usage(tickets, len(prompt_ids))
        )

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
        choices = [
            P.CompletionChoice(index=i, text=prefix + t, finish_reason=_reason(tk))
            for i, (t, tk) in enumerate(zip(texts, tickets))
        ]
        return P.Completion(
            id=rid, created=created, model=model_name, choices=choices, usage=_usage(tickets, len(prompt_ids))
        )

    @v1.post("/review")
    async def review_reply(req: P.ReviewRequest) -> P.ReviewResponse:
        # In its own bounded process, never on the threads that encode prompts (see review_worker).
        try:
            findings = await reviewer.review(req.text, req.finish_reason)
        except ReviewBusy as e:
            raise APIError(
                503,
                f"review: {e}",
                type_="server_error",
                code="review_unavailable",
                headers={"Retry-After": str(settings.retry_after_s)},
            ) from None
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
            raise APIError(
                401,
                "missing or wrong API key: send `Authorization: Bearer <key>` with the key given "
                "to `starchat serve --api-key`",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def _check_model(requested: str | None, names: frozenset[str], served: str) -> None:
    why = unknown_model(requested, names, served)
    if why:  # answering with another model than the one asked for would mislead the client
        raise APIError(404, why, param="model", code="model_not_found")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return JSONResponse(P.ErrorResponse(error=exc.body).model_dump(), status_code=exc.status, headers=exc.headers)

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
        msgs = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ()) if x != 'body') or 'body'}: {e.get('msg')}" for e in errs
        )
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
    body = json.dumps(
        P.ErrorResponse(
            error=P.ErrorBody(message=f"the request body is over {limit} bytes", type="invalid_request_error")
        ).model_dump()
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
