"""Tiny models for the tests: the one random GPT-BigCode builder, the FIM-capable model with StarCoder's FIM
tokens, and a 'stopper' whose greedy output is fixed (one visible token, then <fim_pad>), to see generation end at
the FIM tokens."""

from __future__ import annotations

from pathlib import Path

STOPPER_TOKEN = "Q"  # the visible token the stopper writes first; FIM test prompts must not contain it


def tiny_gpt_bigcode(tok, *, seed: int, n_positions: int = 512, n_embd: int = 64):
    """A randomly initialised 2-layer, 4-head GPT-BigCode sized to ``tok``, with its bos/eos/pad ids."""
    import torch
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    torch.manual_seed(seed)
    cfg = GPTBigCodeConfig(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=2,
        n_head=4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return GPTBigCodeForCausalLM(cfg)


def make_fim_model(base_tokenizer_dir, out: Path, seed: int = 0, stopper: bool = False) -> Path:
    """A 2-layer GPT-BigCode whose tokenizer has the StarChat and FIM tokens (``fim.add_fim_tokens``), saved
    with its ``fim.json``. ``stopper``: the final layer norm ignores its input (weight 0) and its bias points
    at one direction in which only ``STOPPER_TOKEN`` (logit 10) and ``<fim_pad>`` (logit 9) have weight: greedy
    decoding writes ``Q`` and then, with any repetition penalty above 10/9, ``<fim_pad>``, a FIM end token."""
    import torch
    from transformers import AutoTokenizer

    from starchat import fim
    from starchat.templates import prepare_tokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(base_tokenizer_dir))
    spec = fim.add_fim_tokens(tok)
    model = tiny_gpt_bigcode(tok, seed=seed)
    if stopper:
        with torch.no_grad():
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.zero_()
            model.transformer.ln_f.bias[0] = 1.0
            wte = model.transformer.wte.weight
            wte[:, 0] = 0.0
            wte[tok.convert_tokens_to_ids(STOPPER_TOKEN), 0] = 10.0
            wte[tok.convert_tokens_to_ids(spec.pad), 0] = 9.0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    spec.save(out)
    return out
