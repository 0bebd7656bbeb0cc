"""An OpenAI-compatible endpoint as an engine (``load_engine("http://host:8000/v1")``), on the official openai client.

What it does, and how:
* The chat format is the server's: messages go to ``/v1/chat/completions``, a raw text prompt to
  ``/v1/completions``; token ids (and so ``--prefill``) are refused with a message saying why.
* ``generate_batch`` sends the prompts of a batch concurrently, at most ``concurrency`` at once (one
  bounded thread pool per engine). A batch that fails part-way raises :class:`PartialBatchError`
  carrying the completions that did finish, so callers can keep them (eval resumes from there).
* 408/409/429/5xx and connection errors are retried by the openai client itself (exponential backoff
  from 0.5 s, capped at 8 s, ``Retry-After`` honoured), ``max_retries`` times; every request has an
  explicit read timeout and a short connect timeout.
* The StarChat knobs outside the OpenAI spec (``top_k``, ``repetition_penalty``) go as extra body
  fields (always, neutral values too: a server's defaults need not be neutral); stop strings and seeds
  pass through. A knob the server ignores is reported once: the first time its value changes sampling
  (top_k > 0 when not greedy, a penalty other than 1), one request with an invalid value of it and
  ``max_tokens=1`` is sent. A server that implements the knob validates it and answers 400/422; one
  that answers 200 ignored it. A 400/422 saying the field is unknown/unsupported (OpenAI's own API)
  means the same. Either way the knob is reported once and no longer sent.
  Not covered: a server that honours a knob without validating it (llama.cpp's server takes a
  negative ``top_k`` as "off") is reported as ignoring it; seeds cannot be checked this way.
* Errors (down, 401, 404, malformed body, retries exhausted, timeouts) become one-line
  :class:`StarchatError` messages that say what to do; so does a reply that breaks the API's promises
  (content that is not a string, a body or stream line that is not JSON, a lone surrogate).
* Every reply is bounded: ``timeout`` covers it whole and a byte cap follows its max_tokens (both in
  endpoint_guard.py); its text is cut at ``CHARS_PER_TOKEN`` per max_new_tokens (finish_reason "length",
  reported once), for a server that ignores max_tokens.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from starchat.errors import StarchatError
from starchat.inference.endpoint_guard import GuardedClient, ReplyBoundError
from starchat.inference.endpoint_stream import FINISH, PARSE_ERRORS, EndpointGeneration, _count
from starchat.inference.engine import Engine, Prompt
from starchat.inference.params import Completion, SamplingParams

# Keywords of local backends that mean nothing to a remote server (CLIs pass them when set).
LOCAL_ONLY = {
    "n_ctx",
    "n_threads",
    "n_gpu_layers",
    "n_batch",
    "device",
    "dtype",
    "trust_remote_code",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "gguf_file",
}
# An invalid value for each knob outside the spec: a server that implements the knob refuses it.
PROBES = {"top_k": -7, "repetition_penalty": -1.0}
_REFUSAL = re.compile(
    r"unrecogni[sz]ed|unknown|unsupported|not supported|extra|not permitted|unexpected|"
    r"not allowed|invalid (request )?argument",
    re.IGNORECASE,
)
NO_TOKENS = (
    "an endpoint applies its own chat format and takes messages or text, not token ids: --prefill "
    "(which writes the start of the answer in the model's format) is not available for endpoints; "
    "run without --prefill, or evaluate the model locally"
)
# A reply may hold this many characters per requested token before it is cut (finish_reason "length"): a
# token is ~4 characters of text, rarely over 30 (runs of spaces); more means the server ignores max_tokens.
CHARS_PER_TOKEN = 64


def is_endpoint(model: object) -> bool:
    return isinstance(model, str) and model.startswith(("http://", "https://"))


class NoTokenIdsError(StarchatError, NotImplementedError):
    """The endpoint cannot encode or decode token ids. Also a NotImplementedError, which callers that can do
    without token counts (`data pairs`' context check, the judge's prefill) catch to go on without them."""


class PartialBatchError(StarchatError):
    """A batch where some requests failed: ``completions[i]`` is None where request i did not finish."""

    def __init__(self, message: str, completions: list[Completion | None]):
        super().__init__(message)
        self.completions = completions


def _warn(message: str) -> None:
    print(f"starchat: warning: {message}", file=sys.stderr, flush=True)


class EndpointEngine(Engine):
    """A model behind an OpenAI-compatible ``/v1`` URL."""

    eos_token_ids: list[int] = []
    on_local_cpu = False  # the server's hardware generates

    def __init__(
        self,
        url: str,
        template: str | None = None,
        served_model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        notify: Callable[[str], None] | None = None,
        **kw,
    ) -> None:
        super().__init__()
        unknown = sorted(set(kw) - LOCAL_ONLY)
        if unknown:
            raise StarchatError(f"option {unknown[0]!r} does not apply to an endpoint: drop it")
        if template:
            raise StarchatError(
                "--template: an endpoint applies its own chat format; drop --template "
                "(or run the model locally to force one)"
            )
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StarchatError(f"{url!r} is not an endpoint URL: give http(s)://HOST[:PORT]/v1")
        if concurrency < 1:
            raise StarchatError(f"--concurrency {concurrency}: must be >= 1")
        import openai

        self.url, self.timeout, self.max_retries = url.rstrip("/"), timeout, max_retries
        self.notify = notify or _warn
        if not timeout > 0:
            raise StarchatError(f"--request-timeout {timeout}: must be > 0 seconds")
        key = api_key or os.environ.get("OPENAI_API_KEY") or "none"  # servers without auth ignore it
        self.client = openai.OpenAI(
            base_url=self.url,
            api_key=key,
            max_retries=max_retries,
            timeout=openai.Timeout(timeout, connect=min(connect_timeout, timeout)),
            http_client=GuardedClient(timeout),
        )
        self._cut_reported = False
        self._knob_lock = threading.RLock()  # also guards `ignored` (requests run in several threads)
        self._checked: set[str] = set()  # knobs probed already
        self.ignored: list[str] = []  # fields the server ignores or refuses: no longer sent
        self.model_name, self.context_length = self._discover(served_model)
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="endpoint")

    # -- setup ---------------------------------------------------------------------------
    def _discover(self, served_model: str | None) -> tuple[str, int | None]:
        """The model name (``served_model`` or the first of /v1/models) and its context length if listed."""
        import openai

        malformed = StarchatError(
            f"{self.url}/models returned a malformed body (not JSON with a list of model "
            "ids): is this an OpenAI-compatible /v1 endpoint?"
        )
        try:
            cards = list(self.client.with_options(max_retries=1).models.list())
            ids = [c.id for c in cards]
        except openai.NotFoundError:
            if served_model:  # some servers have no /v1/models; the name is enough
                return served_model, None
            raise StarchatError(
                f"{self.url}/models: 404; is the URL the server's /v1 root? Or name the model with --served-model NAME"
            ) from None
        except openai.OpenAIError as e:
            raise self._explain(e) from None
        except PARSE_ERRORS:  # the client parses what it is given: not JSON, or JSON of another shape
            raise malformed from None
        if not all(isinstance(i, str) for i in ids):
            raise malformed
        if served_model is None:
            if not ids:
                raise StarchatError(f"{self.url} lists no models: name one with --served-model NAME")
            served_model = ids[0]
        card = cards[ids.index(served_model)] if served_model in ids else None
        extra = (getattr(card, "model_extra", None) or {}) if card is not None else {}
        ctx = extra.get("context_length") or extra.get("max_model_len")
        return served_model, int(ctx) if isinstance(ctx, int) else None

    def _explain(self, e: Exception) -> StarchatError:
        """One line saying what went wrong and what to do."""
        import openai

        url = self.url
        if isinstance(e, ReplyBoundError):
            return StarchatError(f"{url} {e}")
        if isinstance(e, openai.APITimeoutError):
            return StarchatError(
                f"{url} did not answer within {self.timeout:g} s: raise --request-timeout or lower --concurrency"
            )
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e
            return StarchatError(
                f"cannot reach {url} ({type(cause).__name__}): is the server running "
                "(e.g. `starchat serve`) and the URL right?"
            )
        if isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return StarchatError(
                f"{url} refused the API key ({e.status_code}): pass --api-key KEY or set OPENAI_API_KEY"
            )
        if isinstance(e, openai.APIResponseValidationError):
            return StarchatError(f"{url} returned a malformed body: is this an OpenAI-compatible /v1 endpoint?")
        if isinstance(e, openai.APIStatusError):
            msg = _message(e)
            if e.status_code == 429 or e.status_code >= 500:
                return StarchatError(
                    f"{url} still answered {e.status_code} after {self.max_retries} retries "
                    f"({msg}): try again later or lower --concurrency"
                )
            if e.status_code == 404:
                return StarchatError(
                    f"{url}: 404 ({msg}): check the URL ends in /v1 and --served-model "
                    f"{self.__dict__.get('model_name', '')}".rstrip()
                )
            return StarchatError(f"{url} rejected the request ({e.status_code}: {msg})")
        return StarchatError(f"{url}: {type(e).__name__}: {e}")

    # -- what Engine asks for: the chat format lives on the server -----------------------
    def encode_prompt(self, messages, add_generation_prompt: bool = True) -> list[int]:
        raise NoTokenIdsError(NO_TOKENS)

    encode_text = encode_prompt

    def decode(self, ids: Sequence[int]) -> str:
        raise StarchatError("an endpoint has no local tokenizer to decode token ids with")

    def _tokens(self, prompt_ids, params, max_new_tokens) -> Iterator[int]:
        raise StarchatError("an endpoint generates text, not token ids")

    # -- requests ------------------------------------------------------------------------
    def _kind(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return "text"
        prompt = list(prompt)
        if not prompt:
            raise StarchatError("empty prompt: give at least one message")
        if all(isinstance(m, Mapping) for m in prompt):
            return "chat"
        raise NoTokenIdsError(NO_TOKENS)

    def _body(self, params: SamplingParams) -> tuple[dict[str, Any], dict[str, Any]]:
        """Keyword arguments in the OpenAI spec, and the extra body fields, for ``params``."""
        kw: dict[str, Any] = {
            "model": self.model_name,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.stop:
            kw["stop"] = list(params.stop)
        if params.seed is not None:
            kw["seed"] = params.seed
        # Always sent, neutral values too: a server's own defaults need not be neutral (ours: the cards' 1.2).
        extra: dict[str, Any] = {"top_k": params.top_k, "repetition_penalty": params.repetition_penalty}
        # Probed only where the value changes sampling: a server ignoring a neutral value changes nothing.
        if params.top_k and params.temperature > 0:
            self._check_knob("top_k")
        if params.repetition_penalty != 1.0:
            self._check_knob("repetition_penalty")
        for name in self.ignored:
            kw.pop(name, None)
            extra.pop(name, None)
        return kw, extra

    def _check_knob(self, knob: str) -> None:
        """Probe once whether the server implements ``knob`` (see the module docstring)."""
        import openai

        with self._knob_lock:
            if knob in self._checked:
                return
            self._checked.add(knob)
            try:
                self.client.with_options(max_retries=1).chat.completions.create(
                    model=self.model_name,
                    messages=[{"role": "user", "content": "hi"}],
                    max_tokens=1,
                    extra_body={knob: PROBES[knob]},
                )
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                if _refuses(e, knob):
                    self._ignore(knob, "refuses it")
                return  # it validated the value: the knob is implemented
            except openai.OpenAIError:
                return  # unknown (busy, down...): the real requests will say
            self._ignore(knob, f"accepted the invalid value {knob}={PROBES[knob]}, so it ignores it")

    def _ignore(self, field: str, why: str) -> None:
        with self._knob_lock:
            if field in self.ignored:
                return
            self.ignored.append(field)
            effect = (
                "streamed replies come without token counts"
                if field == "stream_options"
                else "sampling differs from a local run"
            )
            self.notify(f"{self.url} {why}: {field} is not applied there, so {effect}")

    def _create(self, kind: str, prompt: Prompt, params: SamplingParams, stream: bool = False):
        """One request; a field the server refuses by name is dropped (and reported once), then retried."""
        import openai

        for _ in range(4):
            kw, extra = self._body(params)
            if stream:
                kw["stream"] = True
                if "stream_options" not in self.ignored:
                    kw["stream_options"] = {"include_usage": True}
            try:
                if kind == "chat":
                    return self.client.chat.completions.create(messages=list(prompt), extra_body=extra or None, **kw)
                return self.client.completions.create(prompt=prompt, extra_body=extra or None, **kw)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as e:
                field = next((f for f in (*extra, "seed", "stream_options") if _refuses(e, f)), None)
                if field is None or field in self.ignored:
                    raise self._explain(e) from None
                self._ignore(field, "refuses it")
            except openai.OpenAIError as e:
                raise self._explain(e) from None
            except PARSE_ERRORS:
                raise StarchatError(
                    f"{self.url} returned a malformed body (not the JSON of a completion): is "
                    "this an OpenAI-compatible /v1 endpoint?"
                ) from None
        raise StarchatError(f"{self.url} keeps refusing the request's fields: {', '.join(self.ignored)}")

    def _complete(self, prompt: Prompt, params: SamplingParams) -> Completion:
        kind = self._kind(prompt)
        resp = self._create(kind, prompt, params)
        try:
            choice = resp.choices[0]
            text = self.text_of(choice.message.content if kind == "chat" else choice.text, "the reply")
            reason = FINISH.get(choice.finish_reason, "stop")
            usage = resp.usage
            prompt_tokens, completion_tokens = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        except StarchatError:
            raise
        except PARSE_ERRORS:
            raise StarchatError(
                f"{self.url} returned a malformed body (no choices[0] with text): is this an "
                "OpenAI-compatible /v1 endpoint?"
            ) from None
        cap = self.text_cap(params.max_new_tokens)
        if len(text) > cap:
            text, reason = text[:cap], "length"
            self._report_cut(params.max_new_tokens, cap)
        return Completion(
            text=text,
            token_ids=[],
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def text_of(self, value: object, what: str) -> str:
        """``value`` as reply text: a string (None: empty) of valid Unicode, or a one-line error."""
        if value is None:
            return ""
        if not isinstance(value, str):
            raise StarchatError(
                f"{self.url} sent {what} as {type(value).__name__} {_show(value)}, not a string: "
                "is this an OpenAI-compatible /v1 endpoint?"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # a JSON escape like "\ud800" decodes to text nothing can write
            raise StarchatError(
                f"{self.url} sent {what} with a lone surrogate (U+{ord(value[e.start]):04X}), "
                "which is not text: check the server's detokenizer"
            ) from None
        return value

    @staticmethod
    def text_cap(max_new_tokens: int) -> int:
        return max(1, max_new_tokens) * CHARS_PER_TOKEN

    def _report_cut(self, max_new_tokens: int, cap: int) -> None:
        if not self._cut_reported:  # once: an eval would repeat it for every sample
            self._cut_reported = True
            self.notify(
                f"{self.url} sent more than max_new_tokens={max_new_tokens} worth of text (over {cap} "
                "characters): replies are cut there; does the server honour max_tokens?"
            )

    def infill(self, prefix: str, suffix: str, params: SamplingParams | None = None) -> Completion:
        """Fill in the middle: ``prompt`` + ``suffix`` to ``/v1/completions`` (OpenAI's insert mode; the server
        builds its model's FIM prompt, as ``starchat serve`` and vLLM do)."""
        import openai

        params = params or SamplingParams()
        kw, extra = self._body(params)
        try:
            resp = self.client.completions.create(prompt=prefix, suffix=suffix, extra_body=extra or None, **kw)
        except openai.OpenAIError as e:
            raise self._explain(e) from None
        try:
            choice, usage = resp.choices[0], resp.usage
            return Completion(
                text=choice.text or "",
                token_ids=[],
                finish_reason=FINISH.get(choice.finish_reason, "stop"),
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            )
        except (AttributeError, IndexError, TypeError, ValueError):
            raise StarchatError(
                f"{self.url} returned a malformed body (no choices[0] with text): is this an "
                "OpenAI-compatible /v1 endpoint?"
            ) from None

    # -- the public API ------------------------------------------------------------------
    def generate(
        self, prompt: Prompt, params: SamplingParams | None = None, cancel: threading.Event | None = None
    ) -> Completion:
        if cancel is not None:  # only a stream can be stopped part-way
            return self.stream(prompt, params, cancel).drain()
        return self._complete(prompt, params or SamplingParams())

    def generate_batch(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        """All prompts at once, at most ``concurrency`` requests in flight; the order is kept."""
        params = params or SamplingParams()
        futures = [self._pool.submit(self._complete, p, params) for p in prompts]
        done: list[Completion | None] = []
        first: BaseException | None = None
        for f in futures:
            try:
                done.append(f.result())
            except BaseException as e:  # noqa: BLE001  (the others still finish; the first error is raised)
                done.append(None)
                first = first or e
        if first is not None:
            ok = sum(c is not None for c in done)
            msg = str(first) if isinstance(first, StarchatError) else f"{type(first).__name__}: {first}"
            raise PartialBatchError(f"{msg} ({ok} of {len(done)} requests of the batch finished)", done)
        return done  # type: ignore[return-value]

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, cancel: threading.Event | None = None
    ) -> EndpointGeneration:
        params = params or SamplingParams()
        kind = self._kind(prompt)
        return EndpointGeneration(
            self, kind, self._create(kind, prompt, params, stream=True), cancel, params.max_new_tokens
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def _show(value: object) -> str:
    """A short, printable excerpt of a value from the server."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if isinstance(body.get("detail"), (str, list)):
            return str(body["detail"])[:300]
    return str(getattr(e, "message", e))[:300]


def _refuses(e, field: str) -> bool:
    """A 400/422 that names ``field`` as unknown or unsupported (not one that finds its value out of range)."""
    body = getattr(e, "body", None)
    text = f"{_message(e)} {body!r}"
    return field in text and bool(_REFUSAL.search(text))
