"""The llama.cpp backend (llama-cpp-python) for GGUF files: the fast CPU path."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from starchat import threads
from starchat.errors import StarchatError
from starchat.inference.engine import Engine
from starchat.inference.params import SamplingParams
from starchat.inference.templating import select_format

DEFAULT_N_CTX = 4096  # the context to allocate when the GGUF's own is longer: KV memory grows with it
# Set to 1 to keep llama.cpp's AMX weight repacking on a machine where it works (see amx_guard).
KEEP_AMX_ENV = "STARCHAT_LLAMA_AMX"
_LOAD_LOCK = threading.Lock()


def amx_repacking(llama_cpp) -> bool:
    """Whether this llama.cpp build would repack the weights for AMX (a native build on an AMX CPU)."""
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info() and os.environ.get(KEEP_AMX_ENV) != "1"


@contextlib.contextmanager
def amx_guard(llama_cpp):
    """While loading: no extra weight buffers (AMX repacking) where the build has AMX.

    The AMX kernels segfault on the first batch of more than one token on some AMX machines
    (ggml-org/llama.cpp#20824; every prompt crashed llama-cpp-python 0.3.36 built natively on this
    project's Sapphire Rapids-class VMs). `Llama` has no knob for it, so its default model params are
    wrapped for the load, under a lock. Not covered: other extra buffer types are off too there.
    """
    if not amx_repacking(llama_cpp):
        yield
        return
    lib = llama_cpp.llama_cpp
    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    with _LOAD_LOCK:
        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = default


class LlamaCppEngine(Engine):
    def __init__(
        self,
        model: str,
        template: str | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        **_: Any,
    ) -> None:
        super().__init__()
        import llama_cpp
        from llama_cpp import Llama

        if not os.path.isfile(model):
            raise StarchatError(f"GGUF file {model!r} does not exist: check the path (or omit --model for the default)")
        self._llama_cpp = llama_cpp
        self.on_local_cpu = n_gpu_layers == 0
        self.n_threads = n_threads or threads.current()  # by default what other jobs leave idle

        def load(ctx: int):
            with amx_guard(llama_cpp):
                # Flash attention, as llama-server's default (auto) picks: prefill ~15% faster on this CPU, and
                # `serve`'s slots (the same context settings) then compute what llama-server computes.
                return Llama(
                    model_path=model,
                    n_ctx=ctx,
                    n_threads=self.n_threads,
                    flash_attn=True,
                    n_threads_batch=self.n_threads,
                    n_gpu_layers=n_gpu_layers,
                    verbose=False,
                )

        try:
            self.llm = load(n_ctx or DEFAULT_N_CTX)
            arch = self.llm.metadata.get("general.architecture", "")
            trained = int(self.llm.metadata.get(f"{arch}.context_length", 0))
            if not n_ctx and 0 < trained < self.llm.n_ctx():  # never allocate past what the model knows
                self.llm.close()
                self.llm = load(trained)
        except (ValueError, RuntimeError) as e:
            raise StarchatError(
                f"llama.cpp could not load {model!r} ({e}): is it a complete GGUF file from a "
                "llama.cpp-compatible export? Re-export it with `starchat export gguf`"
            ) from None
        meta = self.llm.metadata
        self.context_length = self.llm.n_ctx()
        self.model_name = os.path.splitext(os.path.basename(model))[0]  # the file, as users name it
        self.model_path = model
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._bos = self._piece(self.llm.token_bos())
        self._eos = self._piece(self.llm.token_eos())
        self.format = select_format(
            template,
            meta.get("tokenizer.chat_template"),
            None,
            bos_token=self._bos,
            eos_token=self._eos,
            own_source="GGUF",
        )
        # Every end-of-generation token llama.cpp knows (EOS, EOT, <|im_end|>...), plus the format's end token.
        eog = [t for t in range(self.llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        end = self.format.end_token
        if end:
            end_ids = self.llm.tokenize(end.encode(), add_bos=False, special=True)
            if len(end_ids) == 1:
                eog.append(end_ids[0])
        self.eos_token_ids = list(dict.fromkeys(eog)) or [self.llm.token_eos()]
        # The texts of control tokens (<|im_start|>...): message content holding one is tokenized apart.
        self._control = [
            self._piece(t)
            for t in range(self.llm.n_vocab())
            if llama_cpp.llama_vocab_get_attr(vocab, t) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        ]

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def encode_prompt(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        ids: list[int] = []
        for text, template in self.format.render_pieces(messages, add_generation_prompt, self._control):
            # The template writes any BOS itself; special=True turns its markers into their tokens, and
            # special=False leaves control-token text in message content as plain text.
            ids += self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=template)
        return ids

    def encode_text(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def encode_plain(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _read_fim(self):
        from starchat.inference import fimvocab

        L = self._llama_cpp
        return fimvocab.from_llama_vocab(
            L, L.llama_model_get_vocab(self.llm.model), self.llm.n_vocab(), self._piece, self._eos
        )

    def decode(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def _tokens(self, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int) -> Iterator[int]:
        # llama.cpp's own sampler chain (the one `sampler_chain` rebuilds for the serving slots); min_p/typical
        # off so the cards' top-k/top-p/temperature rule alone.
        self.llm.set_seed(chain_seed(params))
        # Llama.generate keeps the KV cache of the longest common prefix with the last prompt:
        # in a chat, each turn only evaluates the new tokens.
        return self.llm.generate(
            prompt_ids,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=0.0,
            typical_p=1.0,
            temp=params.temperature,
            repeat_penalty=params.repetition_penalty,
        )

    def close(self) -> None:
        self.llm.close()


def chain_seed(params: SamplingParams) -> int:
    """The request's seed, or a fresh one: chat and the serving slots draw it the same way."""
    return params.seed if params.seed is not None else random.randrange(2**31)


def sampler_chain(llama_cpp, params: SamplingParams, n_vocab: int, penalty_last_n: int):
    """A llama.cpp sampler chain that samples exactly as ``Llama.generate`` does for ``LlamaCppEngine._tokens``.

    Same samplers, same order (llama-cpp-python 0.3's ``Llama._init_sampler``): repetition penalty over the
    last ``penalty_last_n`` accepted tokens (the reply so far: prompt tokens are never accepted), then greedy,
    or top-k -> typical (off) -> top-p -> min-p (off) -> temperature -> a draw seeded like the chat's. The
    caller frees it with ``llama_sampler_free``; ``llama_sampler_sample`` accepts each token it picks.
    """
    L = llama_cpp
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = lambda s: L.llama_sampler_chain_add(chain, s)  # noqa: E731 - the chain takes ownership
    add(L.llama_sampler_init_penalties(n_vocab, penalty_last_n, params.repetition_penalty, 0.0, 0.0))
    if params.temperature == 0:
        add(L.llama_sampler_init_greedy())
        return chain
    add(L.llama_sampler_init_top_k(params.top_k))
    add(L.llama_sampler_init_typical(1.0, 1))
    add(L.llama_sampler_init_top_p(params.top_p, 1))
    add(L.llama_sampler_init_min_p(0.0, 1))
    add(L.llama_sampler_init_temp(params.temperature))
    add(L.llama_sampler_init_dist(chain_seed(params)))
    return chain
