"""The vLLM backend for GPUs: an optional extra (`pip install 'starchat[vllm]'`) that CI never needs."""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

from starchat.errors import StarchatError
from starchat.inference.engine import Generation, Prompt
from starchat.inference.params import Completion, SamplingParams
from starchat.inference.tokenizer_engine import TokenizerEngine


class VLLMEngine(TokenizerEngine):
    """vLLM's offline ``LLM``: continuous batching on the GPU. Streaming yields the finished reply's tokens
    (vLLM's offline API has no token callback); the server and eval use ``generate_batch``."""

    def __init__(self, model: str, template: str | None = None, **kw: Any) -> None:
        super().__init__()
        try:
            import vllm
        except ImportError:
            raise StarchatError("the vllm backend needs vLLM and a CUDA GPU: `pip install 'starchat[vllm]'`, "
                                "or use --backend transformers (or llamacpp for a .gguf file)") from None
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, **kw)
        self.tokenizer = self.llm.get_tokenizer()
        self.model_name = os.path.basename(os.path.normpath(model)) if os.path.isdir(model) else model
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        gen_eos = self.llm.llm_engine.model_config.hf_config.eos_token_id
        self._setup_format(model, template, gen_eos)

    def _sampling(self, params: SamplingParams, max_new_tokens: int):
        return self._vllm.SamplingParams(
            temperature=params.temperature, top_k=params.top_k or -1, top_p=params.top_p,
            repetition_penalty=params.repetition_penalty, max_tokens=max_new_tokens, seed=params.seed,
            stop_token_ids=self.eos_token_ids, include_stop_str_in_output=True)

    def _run(self, prompts: list[list[int]], params: SamplingParams, max_new_tokens: int) -> list[list[int]]:
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                                 self._sampling(params, max_new_tokens), use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    def _tokens(self, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int) -> Iterator[int]:
        yield from self._run([prompt_ids], params, max_new_tokens)[0]

    def generate_batch(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        all_ids = [self.prompt_ids(p) for p in prompts]
        if not all_ids:
            return []
        max_new = self._max_new_tokens(max(len(x) for x in all_ids), params.max_new_tokens)
        with self._lock:
            rows = self._run(all_ids, params, max_new)
        return [Generation(self, ids, params, tokens=row).drain() for ids, row in zip(all_ids, rows)]
