"""The backend-independent engine: prompts in, streamed text and Completions out."""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from starchat.errors import StarchatError
from starchat.inference.params import Completion, SamplingParams
from starchat.inference.textstream import TextAssembler

# Messages (OpenAI-style dicts), token IDs, or a raw text prompt used as is (no chat template).
Prompt = Sequence[Mapping[str, Any]] | Sequence[int] | str


class Generation:
    """One running generation: iterate it for text deltas; ``.completion`` is set once it is done."""

    def __init__(
        self,
        engine: Engine,
        prompt_ids: list[int],
        params: SamplingParams,
        cancel: threading.Event | None = None,
        tokens: Iterable[int] | None = None,
    ) -> None:
        """``tokens``: already generated token IDs (a row of a batch) instead of running the backend."""
        self.engine, self.prompt_ids, self.params = engine, prompt_ids, params
        self.cancel = cancel or threading.Event()
        self._given = tokens
        # Checked now, so a prompt that overflows the context fails at stream(), not mid-iteration.
        self.max_new_tokens = engine._max_new_tokens(len(prompt_ids), params.max_new_tokens)
        self.completion: Completion | None = None
        self._iter = self._run()

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def drain(self) -> Completion:
        """Run to the end; returns the Completion."""
        for _ in self:
            pass
        assert self.completion is not None
        return self.completion

    def _run(self) -> Iterator[str]:
        engine, params = self.engine, self.params
        max_new = self.max_new_tokens
        text = TextAssembler(engine.decode, params.stop, prompt_tail=self.prompt_ids)
        eos = set(engine.eos_token_ids) | set(params.stop_token_ids)
        ids: list[int] = []
        generated, reason = 0, "length"
        with engine._lock if self._given is None else contextlib.nullcontext():
            tokens = engine._tokens(self.prompt_ids, params, max_new) if self._given is None else iter(self._given)
            try:
                for tok in tokens:
                    if self._given is None and self.cancel.is_set():
                        reason = "cancelled"
                        break
                    generated += 1
                    if tok in eos:
                        reason = "stop"
                        break
                    ids.append(tok)
                    delta = text.feed(tok)
                    if text.stopped:
                        reason = "stop"
                    if delta:
                        yield delta
                    if text.stopped:
                        break
                    if generated >= max_new:
                        break
            finally:
                if hasattr(tokens, "close"):
                    tokens.close()  # stops the backend (e.g. the transformers thread) early
        if reason != "stop" and self.cancel.is_set():
            reason = "cancelled"
        tail = text.finish()
        if tail:
            yield tail
        self.completion = Completion(
            text=text.text,
            token_ids=ids,
            finish_reason=reason,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=generated,
        )


class Engine(ABC):
    """One loaded model. Subclasses provide tokenization and a token generator."""

    model_name: str
    context_length: int
    eos_token_ids: list[int]
    on_local_cpu: bool = True  # generation runs on this machine's CPU (work beside it takes its cores)

    def __init__(self) -> None:
        # One generation at a time per model: the backends keep state (KV cache, RNG).
        self._lock = threading.Lock()  # a plain Lock: a stream may be resumed from another thread

    @classmethod
    def open(cls, model: str, template: str | None = None, **kw: Any) -> Engine:
        """Load ``model``: what `load_engine` calls through the backend registry. A backend that must
        rewrite its arguments first (a GGUF file for transformers) overrides this."""
        return cls(model, template=template, **kw)

    # -- what a backend implements -------------------------------------------------------
    @abstractmethod
    def encode_prompt(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """The messages in the model's own chat format, as token IDs."""

    @abstractmethod
    def encode_text(self, text: str) -> list[int]:
        """A raw text prompt as token IDs (with the BOS token where the model wants one)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Token IDs to text, special tokens left out."""

    @abstractmethod
    def _tokens(self, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int) -> Iterator[int]:
        """Sampled token IDs, one by one; closing the generator must stop the backend."""

    def encode_plain(self, text: str) -> list[int]:
        """Text as token IDs, no BOS, control-token spellings kept as text (FIM prompts are built from these)."""
        raise StarchatError(f"{self.model_name}: this engine cannot encode text apart from control tokens")

    def _read_fim(self):
        """The model's FIM tokens (``fimvocab.ServedFim``) or None; backends with a vocabulary override it."""
        return None

    # -- the public API ------------------------------------------------------------------
    def fim(self):
        """The served model's fill-in-the-middle tokens (a ``fimvocab.ServedFim``), or None; read once."""
        if not hasattr(self, "_fim_tokens"):
            self._fim_tokens = self._read_fim()
        return self._fim_tokens

    def fim_prompt(self, prefix: str, suffix: str, *, prompt: str = "", extra=(), budget: int | None = None):
        """The model's PSM prompt (``fim.FimPrompt``) for a middle between ``prefix`` and ``suffix``: its FIM
        tokens, text encoded as text (``encode_plain``) and its BOS; a FimError naming a model without FIM."""
        from starchat import fim

        found = fim.require(self.fim(), self.model_name)
        return fim.build_prompt(
            found.spec,
            found.ids,
            self.encode_plain,
            prefix=prefix,
            suffix=suffix,
            prompt=prompt,
            extra=extra,
            budget=budget,
            bos=self.encode_text(""),
        )

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.encode_text(prompt)
        prompt = list(prompt)
        if not prompt:
            raise StarchatError("empty prompt: give at least one message or token ID")
        if all(isinstance(t, int) for t in prompt):
            return prompt
        return self.encode_prompt(prompt)

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, cancel: threading.Event | None = None
    ) -> Generation:
        """Text deltas as they are generated; their concatenation is ``generate()``'s text for the same seed."""
        return Generation(self, self.prompt_ids(prompt), params or SamplingParams(), cancel)

    def generate(
        self, prompt: Prompt, params: SamplingParams | None = None, cancel: threading.Event | None = None
    ) -> Completion:
        gen = self.stream(prompt, params, cancel)
        return gen.drain()

    def generate_batch(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        """Many prompts; backends that batch for real override this."""
        return [self.generate(p, params) for p in prompts]

    def _max_new_tokens(self, prompt_len: int, wanted: int) -> int:
        room = self.context_length - prompt_len
        if room < 1:
            raise StarchatError(
                f"the prompt is {prompt_len} tokens but {self.model_name}'s context is {self.context_length}: "
                "shorten the conversation (/reset in the chat) or use a longer context (--n-ctx for GGUF models)"
            )
        return min(wanted, room)

    def close(self) -> None:  # noqa: B027  (optional: a backend with nothing to free need not override it)
        """Free the model's memory (optional)."""
