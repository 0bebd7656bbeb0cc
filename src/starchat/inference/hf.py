"""The transformers backend: any HF model directory or hub ID, streamed through a generation thread."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from starchat.errors import StarchatError
from starchat.inference.engine import Generation, Prompt
from starchat.inference.params import Completion, SamplingParams
from starchat.inference.textstream import TextAssembler
from starchat.inference.tokenizer_engine import TokenizerEngine

_DONE = object()


class TransformersEngine(TokenizerEngine):
    @classmethod
    def open(cls, model: str, template: str | None = None, **kw: Any) -> TransformersEngine:
        if os.path.isfile(model):  # a GGUF that transformers dequantizes (slow to load; llamacpp is the fast path)
            return cls(os.path.dirname(model) or ".", template=template, gguf_file=os.path.basename(model), **kw)
        return cls(model, template=template, **kw)

    def __init__(
        self,
        model: str,
        template: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
        **_: Any,
    ) -> None:
        """``gguf_file``: a GGUF inside ``model`` (a directory) that transformers dequantizes on load."""
        super().__init__()
        load = dict(trust_remote_code=trust_remote_code, **({"gguf_file": gguf_file} if gguf_file else {}))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, **load)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, **load)
        except OSError as e:
            where = "a local directory" if os.path.isdir(model) else "a hub ID (needs the network) or a local directory"
            raise StarchatError(f"cannot load model {model!r} as {where}: {str(e).splitlines()[0]}") from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.on_local_cpu = str(self.device).startswith("cpu")
        self.model_name = gguf_file or (os.path.basename(os.path.normpath(model)) if os.path.isdir(model) else model)
        cfg = self.model.config
        self.context_length = int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 2048))
        self._setup_format(model, template, getattr(self.model.generation_config, "eos_token_id", None))

    def _generate_kwargs(self, params: SamplingParams, max_new_tokens: int) -> dict[str, Any]:
        sample = params.temperature > 0
        # Sampling: temperature, top-k and top-p in one processor (_TopKTopP) instead of transformers'
        # three warpers, whose top-p sorts the whole vocabulary at every token; theirs are switched off.
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=list(dict.fromkeys([*self.eos_token_ids, *params.stop_token_ids])),
            pad_token_id=self.pad_token_id,
            **(dict(temperature=1.0, top_k=0, top_p=1.0) if sample else {}),
        )
        if params.seed is not None:
            torch.manual_seed(params.seed)
        extra = LogitsProcessorList([_TopKTopP(params.temperature, params.top_k, params.top_p)] if sample else [])
        return {"generation_config": cfg, "logits_processor": extra}

    def _tokens(self, prompt_ids: list[int], params: SamplingParams, max_new_tokens: int) -> Iterator[int]:
        """Runs ``model.generate`` in a thread; a streamer hands each new token to this generator."""
        q: queue.Queue = queue.Queue()
        stop = threading.Event()
        kwargs = self._generate_kwargs(params, max_new_tokens)
        input_ids = torch.tensor([prompt_ids], device=self.device)

        def work():
            try:
                with torch.inference_mode():
                    self.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        streamer=_QueueStreamer(q),
                        stopping_criteria=StoppingCriteriaList([_StopFlag(stop)]),
                        **kwargs,
                    )
            except BaseException as e:  # re-raised in the consumer's thread
                q.put(e)
            finally:
                q.put(_DONE)

        thread = threading.Thread(target=work, name="starchat-generate", daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    def generate(
        self, prompt: Prompt, params: SamplingParams | None = None, cancel: threading.Event | None = None
    ) -> Completion:
        """One direct ``model.generate`` call (no thread, no streamer): same tokens as ``stream()``."""
        return self._generate_rows([self.prompt_ids(prompt)], params or SamplingParams(), cancel)[0]

    def generate_batch(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        """One left-padded ``model.generate`` call for all prompts; each row stops on its own."""
        all_ids = [self.prompt_ids(p) for p in prompts]
        return self._generate_rows(all_ids, params or SamplingParams()) if all_ids else []

    def _generate_rows(
        self, all_ids: list[list[int]], params: SamplingParams, cancel: threading.Event | None = None
    ) -> list[Completion]:
        width = max(len(x) for x in all_ids)
        max_new = self._max_new_tokens(width, params.max_new_tokens)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(x)) + x for x in all_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in all_ids], device=self.device)
        criteria = StoppingCriteriaList([_StopStrings(self.decode, params.stop, width)] if params.stop else [])
        if cancel is not None:
            criteria.append(_StopFlag(cancel))
        with self._lock, torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                stopping_criteria=criteria,
                **self._generate_kwargs(params, max_new),
            )
        # Each row goes through the same stop/EOS/text logic as a streamed generation.
        rows = [Generation(self, ids, params, cancel, tokens=out[i, width:].tolist()) for i, ids in enumerate(all_ids)]
        return [g.drain() for g in rows]


class _TopKTopP(LogitsProcessor):
    """transformers' Temperature -> TopK -> TopP warpers in one pass, keeping the same tokens.

    TopPLogitsWarper sorts all ~49k logits of every row at every token (about 40x TopK's cost, a
    fifth of a decode step of a 135M model on 2 cores). After top-k only k candidates are left, so
    the nucleus is found among them: ``torch.topk`` returns them sorted, and their ascending
    cumulative probability is the same as over the whole masked vocabulary. Not covered: logits tied
    exactly at a cut-off are all kept, where TopP's sort would drop an arbitrary one of them.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float) -> None:
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids, scores):
        scores = scores / self.temperature if self.temperature != 1.0 else scores
        vocab = scores.shape[-1]
        k = self.top_k if 0 < self.top_k < vocab else vocab
        if k == vocab and self.top_p >= 1.0:
            return scores
        top = torch.topk(scores, k, dim=-1).values  # descending
        cut = top[..., -1:]  # TopK keeps every logit >= the k-th largest
        if self.top_p < 1.0:
            asc = top.flip(-1)
            cum = asc.softmax(-1).cumsum(-1)
            drop = (cum <= 1 - self.top_p).sum(-1, keepdim=True).clamp(max=k - 1)  # TopP keeps at least one
            cut = asc.gather(-1, drop)
        return scores.masked_fill(scores < cut, -float("inf"))


class _QueueStreamer:
    """A transformers streamer that puts each new token ID on a queue."""

    def __init__(self, q: queue.Queue) -> None:
        self.q, self.first = q, True

    def put(self, value) -> None:
        if self.first:  # generate() first passes the prompt
            self.first = False
            return
        for t in value.reshape(-1).tolist():
            self.q.put(t)

    def end(self) -> None:
        pass


class _StopFlag(StoppingCriteria):
    """Stops generation when the consumer goes away (cancelled, stop string found, closed)."""

    def __init__(self, flag: threading.Event) -> None:
        self.flag = flag

    def __call__(self, input_ids, scores, **kw):
        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device)


class _StopStrings(StoppingCriteria):
    """Per row: True once the row's generated text contains a stop string.

    Each row feeds its new token to its own TextAssembler, so a step costs O(1) per row whatever the
    stop strings (re-decoding a window as long as the longest stop string made every step cost that).
    """

    def __init__(self, decode, stop: Sequence[str], prompt_width: int) -> None:
        self.decode, self.stop, self.width = decode, list(stop), prompt_width
        self.rows: list[TextAssembler] | None = None

    def __call__(self, input_ids, scores, **kw):
        if self.rows is None:  # the first call sees each row's prompt and first new token
            self.rows = [
                TextAssembler(self.decode, self.stop, prompt_tail=row[: self.width].tolist()) for row in input_ids
            ]
        for asm, tok in zip(self.rows, input_ids[:, -1].tolist()):
            asm.feed(tok)
        return torch.tensor([asm.stopped for asm in self.rows], dtype=torch.bool, device=input_ids.device)
