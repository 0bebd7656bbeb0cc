"""Run as a script under either transformers version: load a model directory as a user would, print what it computes.

Printed (JSON): the version, the card's prompt rendered by the saved chat template, its token ids, the eos
of generation_config.json, the last position's logits, and 8 greedily generated tokens.
"""

import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig


def main(model_dir: str) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": ""}, {"role": "user", "content": "How do I add 3 and 4 in Python?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0, -1]
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=8,
            min_new_tokens=8,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    print(
        json.dumps(
            {
                "version": transformers.__version__,
                "prompt": prompt,
                "ids": ids,
                "eos": GenerationConfig.from_pretrained(model_dir).eos_token_id,
                "end_id": tok.convert_tokens_to_ids("<|end|>"),
                "logits": logits.tolist(),
                "greedy": out[0, len(ids) :].tolist(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
