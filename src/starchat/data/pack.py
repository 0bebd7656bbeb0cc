"""Packing: several tokenized dialogues per row, with position_ids restarting at 0 for each one.

Position ids that restart mark where each dialogue begins, so attention never crosses
dialogues: flash-attention's varlen kernels read them directly, and transformers (v5) builds a
block-diagonal causal mask from them for sdpa/eager when the batch has no attention_mask and no
KV cache (``DataCollatorForPacking`` and ``use_cache=False`` in training). Nothing is dropped:
rows are filled best-fit-decreasing, each dialogue lies whole in one row, and a dialogue longer
than the block (only possible when it was not truncated to the block) is an error, not a cut.
"""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np

from starchat.errors import StarchatError


def plan_bins(lengths: list[int], block_size: int) -> list[list[int]]:
    """Best-fit decreasing: the indices of the dialogues in each row, in a deterministic order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (space left, row), kept sorted for a binary search
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > block_size:
            raise StarchatError(f"dialogue {i} has {n} tokens, more than the block of {block_size}; "
                                f"tokenize with max_length <= block_size")
        k = bisect_left(free, (n, -1))
        if k < len(free):
            space, row = free.pop(k)
        else:
            space, row = block_size, len(bins)
            bins.append([])
        bins[row].append(i)
        if space - n > 0:
            insort(free, (space - n, row))
    return bins


def pack_dataset(ds, block_size: int):
    """``Dataset[input_ids, labels]`` -> ``(Dataset[input_ids, labels, position_ids], stats)``."""
    import datasets

    for col in ("input_ids", "labels"):
        if col not in ds.column_names:
            raise StarchatError(f"packing needs a tokenized dataset with {col!r}; columns: {ds.column_names}")
    ids, labels = ds["input_ids"], ds["labels"]
    lengths = [len(x) for x in ids]
    bins = plan_bins(lengths, block_size)
    rows = {"input_ids": [], "labels": [], "position_ids": []}
    for members in bins:
        rows["input_ids"].append([t for i in members for t in ids[i]])
        rows["labels"].append([t for i in members for t in labels[i]])
        rows["position_ids"].append(np.concatenate([np.arange(lengths[i]) for i in members]).tolist())
    tokens = sum(lengths)
    stats = {"block_size": block_size, "dialogues": len(lengths), "rows": len(bins), "tokens": tokens,
             "packing_efficiency": tokens / (len(bins) * block_size) if bins else 0.0}
    seq = datasets.Sequence(datasets.Value("int32"))
    features = datasets.Features({"input_ids": seq, "labels": seq, "position_ids": seq})
    return datasets.Dataset.from_dict(rows, features=features), stats
