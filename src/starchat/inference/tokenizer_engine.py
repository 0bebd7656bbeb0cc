"""What the transformers and vLLM backends share: a HF tokenizer, its chat format and end-of-turn tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starchat import fim
from starchat.errors import StarchatError
from starchat.inference.engine import Engine
from starchat.inference.templating import select_format


class TokenizerEngine(Engine):
    """An engine whose prompts go through a transformers tokenizer (``self.tokenizer``)."""

    tokenizer: Any

    def _setup_format(self, model: str, template: str | None, generation_eos: int | list[int] | None) -> None:
        tok = self.tokenizer
        self.model_source = model  # where fim.json may live beside the weights
        self.format = select_format(
            template,
            getattr(tok, "chat_template", None),
            model,
            bos_token=tok.bos_token or "",
            eos_token=tok.eos_token or "",
        )
        self.eos_token_ids = self._find_eos_ids(generation_eos)
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else self.eos_token_ids[0]

    def _find_eos_ids(self, generation_eos: int | list[int] | None) -> list[int]:
        """The end-of-turn IDs: generation_config's, the tokenizer's EOS, and the format's end token."""
        tok = self.tokenizer
        ids = (generation_eos if isinstance(generation_eos, list) else [generation_eos]) + [tok.eos_token_id]
        end = self.format.end_token
        if end:
            tid = tok.convert_tokens_to_ids(end)
            if tid is not None and tid != tok.unk_token_id:
                ids.append(tid)
        ids = [i for i in dict.fromkeys(ids) if i is not None]
        if not ids:
            raise StarchatError(
                f"{self.model_name}: no end-of-turn token (no eos_token_id in generation_config or "
                "tokenizer): pass --template starchat or set eos_token in the tokenizer"
            )
        return ids

    def encode_prompt(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        tok = self.tokenizer
        control = [t.content for t in tok.added_tokens_decoder.values() if t.special]
        ids: list[int] = []
        for text, template in self.format.render_pieces(messages, add_generation_prompt, control):
            # The template writes any BOS itself, as transformers' apply_chat_template does; message
            # content is tokenized with split_special_tokens, so it can never spell a control token.
            ids += tok(text, add_special_tokens=False, split_special_tokens=not template)["input_ids"]
        return ids

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def encode_plain(self, text: str) -> list[int]:
        return fim.encode_plain(self.tokenizer, text)

    def _read_fim(self):
        from starchat.inference import fimvocab

        return fimvocab.from_tokenizer(self.model_source, self.tokenizer)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
