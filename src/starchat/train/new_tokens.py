"""Learning the dialogue tokens: larger optimizer steps for their rows, and how often the model predicts <|end|>.

Why the larger steps: the new rows start at the mean embedding, so `<|end|>`'s logit starts at the
vocabulary's average (rank ~25,000 of 49,152 on SmolLM2). Adam moves a row by about `lr` per
coordinate per step, so a short run (a CPU run has tens of steps) ends with `<|end|>` still ranked
in the thousands: validation loss drops, but generation never stops. Scaling only these rows' steps
fixes that without touching the rest of the model.
"""

from __future__ import annotations

import numpy as np

from starchat.errors import StarchatError
from starchat.models import accuracy_counts


def _targets(model, token_ids: list[int]):
    """(parameter, row index or None for the whole tensor) pairs holding the new tokens' rows."""
    import torch

    peft_rows = [p for n, p in model.named_parameters() if "trainable_tokens_delta" in n and p.requires_grad]
    if peft_rows:  # LoRA: peft keeps exactly the new tokens' rows in their own parameters
        return [(p, None) for p in peft_rows]
    rows = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
    weights = []
    for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
        if layer is not None and layer.weight.requires_grad and all(layer.weight is not w for w in weights):
            weights.append(layer.weight)
    if any(w.dim() != 2 or w.shape[0] <= int(rows.max()) for w in weights):
        raise StarchatError(
            "training.new_token_lr_multiplier: the embeddings are sharded (ZeRO-3 / FSDP) or "
            "smaller than the vocabulary; set it to 1.0 for this run"
        )
    return [(w, rows.to(w.device)) for w in weights]


def scale_new_token_steps(optimizer, model, token_ids: list[int], multiplier: float) -> None:
    """After every optimizer step, the new tokens' embedding and lm_head rows have moved `multiplier` times
    as far as the optimizer moved them (weight decay included). A no-op at 1.0.

    Not covered: parameters that ZeRO-3 or FSDP shard or flatten (the rows cannot be found there; the
    config check refuses that combination).
    """
    import torch

    if multiplier == 1.0:
        return
    targets = _targets(model, token_ids)
    before: list = []

    def snapshot(opt, args, kwargs):
        with torch.no_grad():
            before[:] = [p.detach()[r].clone() if r is not None else p.detach().clone() for p, r in targets]

    def scale(opt, args, kwargs):
        with torch.no_grad():
            for (p, r), old in zip(targets, before):
                if r is None:
                    p.copy_(old + multiplier * (p - old))
                else:
                    p[r] = old + multiplier * (p[r] - old)
        before.clear()

    optimizer.register_step_pre_hook(snapshot)
    optimizer.register_step_post_hook(scale)


def end_token_logits_to_argmax(logits, labels):
    """`preprocess_logits_for_metrics`: keep only the top prediction per position (the logits are huge)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def end_token_metrics(end_id: int):
    """`compute_metrics` giving `end_token_accuracy`: the fraction of assistant turns whose `<|end|>` is the
    model's top prediction (greedy decoding stops there), and `token_accuracy` over all trained tokens."""

    def compute(eval_pred) -> dict[str, float]:
        preds, labels = np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids)
        # Position t predicts label t+1 (the model shifts labels itself).
        hits, tokens, end_hits, ends = accuracy_counts(preds[:, :-1], labels[:, 1:], end_id)
        return {"token_accuracy": hits / max(tokens, 1), "end_token_accuracy": end_hits / max(ends, 1)}

    return compute
