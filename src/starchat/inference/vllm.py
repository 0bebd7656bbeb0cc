"""The vLLM backend for GPUs (`pip install 'starchat[vllm]'`), on the public API of vLLM 0.33.

- ``vllm.LLM(model, tensor_parallel_size=..., gpu_memory_utilization=..., max_model_len=...)`` loads the model.
  Its ``llm_engine`` (``vllm.LLMEngine``: ``add_request`` / ``step`` / ``abort_request``) streams one request
  token by token for ``stream``/``generate`` (closing the stream aborts the request), and the server's
  ``VLLMScheduler`` drives the same engine for many requests; ``generate_batch`` is ``LLM.generate``.
- Sampling (``vllm_sampling``): temperature, top-k, top-p, repetition penalty and seed map one to one; the
  stop strings and the end-of-turn ids (``stop_token_ids``) go to vLLM, so vLLM ends the request itself; new
  tokens come as deltas (``RequestOutputKind.DELTA``). The text is still assembled by starchat from the
  token ids, so stop strings split across tokens end the reply at the same place as on the other backends.
- The chat format is the model's own chat template (the tokenizer's ``chat_template``, else a
  ``dialogue_template.json``), rendered by starchat and handed to vLLM as token ids.
Not covered: vLLM's repetition penalty counts the prompt and the whole reply (as transformers does), while
llama.cpp's counts the last 64 generated tokens, so a seed gives the same text on vLLM runs only.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

from starchat.errors import StarchatError
from starchat.inference.engine import Generation, Prompt
from starchat.inference.params import Completion, SamplingParams
from starchat.inference.tokenizer_engine import TokenizerEngine

# Options of the other backends that `starchat chat/serve/eval` may pass; vLLM has no use for them.
_OTHER_BACKENDS = ("n_threads", "n_gpu_layers", "device", "gguf_file")


def vllm_sampling(params: SamplingParams, max_tokens: int, stop_token_ids: Sequence[int], stream: bool = True):
    """``vllm.SamplingParams`` for starchat's ``params``; ``stream``: new tokens each step, else only at the end."""
    from vllm.sampling_params import RequestOutputKind as kind
    from vllm.sampling_params import SamplingParams as VLLMSamplingParams

    return VLLMSamplingParams(
        n=1,
        temperature=params.temperature,
        top_k=params.top_k if params.top_k > 0 else 0,
        top_p=params.top_p,
        repetition_penalty=params.repetition_penalty,
        max_tokens=max_tokens,
        seed=params.seed,
        stop=list(params.stop),
        stop_token_ids=list(dict.fromkeys([*stop_token_ids, *params.stop_token_ids])),
        # Keep the stop string in vLLM's own text: with it left out, vLLM holds back the last characters of
        # every streamed step; starchat cuts the text itself.
        include_stop_str_in_output=True,
        output_kind=kind.DELTA if stream else kind.FINAL_ONLY,
    )


def llm_args(
    model: str,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float | None = None,
    n_ctx: int | None = None,
    dtype: str = "auto",
    seed: int = 0,
    **kw: Any,
) -> dict[str, Any]:
    """The keywords for ``vllm.LLM``: starchat's names (``n_ctx``) mapped, other backends' options dropped."""
    for name in _OTHER_BACKENDS:
        kw.pop(name, None)
    if tensor_parallel_size < 1:
        raise StarchatError(f"--tensor-parallel-size {tensor_parallel_size} must be >= 1")
    args = dict(model=model, tensor_parallel_size=tensor_parallel_size, dtype=dtype, seed=seed, **kw)
    if gpu_memory_utilization is not None:
        if not 0 < gpu_memory_utilization <= 1:
            raise StarchatError(f"--gpu-memory-utilization {gpu_memory_utilization} must be in (0, 1]")
        args["gpu_memory_utilization"] = gpu_memory_utilization
    if n_ctx:
        args["max_model_len"] = n_ctx
    return args


def generation_eos(model: str, fallback) -> int | list[int] | None:
    """generation_config.json's eos_token_id (what transformers stops on), else the model config's."""
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except (OSError, ValueError):
        eos = None
    return eos if eos is not None else fallback


class VLLMEngine(TokenizerEngine):
    """A model on vLLM: continuous batching and a paged KV cache on the GPU(s)."""

    on_local_cpu = False

    def __init__(self, model: str, template: str | None = None, **kw: Any) -> None:
        super().__init__()
        try:
            import vllm
            from vllm.inputs import TokensPrompt
        except ImportError:
            raise StarchatError(
                "the vllm backend needs vLLM and a CUDA GPU: `pip install 'starchat[vllm]'`, "
                "or use --backend transformers (or llamacpp for a .gguf file)"
            ) from None
        self._prompt = TokensPrompt
        self.llm = vllm.LLM(**llm_args(model, **kw))
        self.engine = self.llm.llm_engine  # vllm.LLMEngine
        self.tokenizer = self.llm.get_tokenizer()
        self.model_name = os.path.basename(os.path.normpath(model)) if os.path.isdir(model) else model
        self.context_length = int(self.llm.model_config.max_model_len)
        self._setup_format(model, template, generation_eos(model, self.llm.model_config.hf_config.eos_token_id))
        self._ids = itertools.count()

    def sampling(self, params: SamplingParams, max_new_tokens: int, stream: bool = True):
        return vllm_sampling(params, max_new_tokens, [*self.eos_token_ids, *params.stop_token_ids], stream)

    def request_id(self) -> str:
        return f"starchat-{next(self._ids)}"

    def tokens_prompt(self, ids: list[int]):
        return self._prompt(prompt_token_ids=list(ids))

    def _tokens(self, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int) -> Iterator[int]:
        """One request on the engine, its new tokens as each step makes them; closing this aborts it."""
        rid = self.request_id()
        self.engine.add_request(rid, self.tokens_prompt(prompt_ids), self.sampling(params, max_new_tokens))
        finished = False
        try:
            while not finished:
                for out in self.engine.step():
                    if out.request_id == rid:
                        finished = out.finished
                        yield from out.outputs[0].token_ids
        finally:
            if not finished:
                self.engine.abort_request([rid])

    def generate_batch(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        all_ids = [self.prompt_ids(p) for p in prompts]
        if not all_ids:
            return []
        max_new = self._max_new_tokens(max(len(x) for x in all_ids), params.max_new_tokens)
        with self._lock:
            outs = self.llm.generate(
                [self.tokens_prompt(p) for p in all_ids], self.sampling(params, max_new, stream=False), use_tqdm=False
            )
        return [
            Generation(self, ids, params, tokens=list(o.outputs[0].token_ids)).drain() for ids, o in zip(all_ids, outs)
        ]
