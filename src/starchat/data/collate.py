"""Batch collators for tokenized dialogues: packed rows (position_ids, no mask) and plain rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from starchat.data.tokenize import IGNORE_INDEX


def _width(features: list[dict], multiple: int | None) -> int:
    width = max(len(f["input_ids"]) for f in features)
    return -(-width // multiple) * multiple if multiple else width


def _pad(rows: list[list[int]], value: int, width: int) -> torch.Tensor:
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


@dataclass
class DataCollatorForPacking:
    """Pads packed rows to the longest in the batch and returns input_ids, labels and position_ids.

    No attention_mask on purpose: with none (and no KV cache) transformers isolates the dialogues
    of a row by its restarting position_ids. The padding gets positions 0..k, a dialogue of its
    own that nothing attends to and whose labels are ignored.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = _width(features, self.pad_to_multiple_of)
        pos = [list(f["position_ids"]) + list(range(width - len(f["position_ids"]))) for f in features]
        return {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_token_id, width),
            "labels": _pad([f["labels"] for f in features], IGNORE_INDEX, width),
            "position_ids": torch.tensor(pos, dtype=torch.long),
        }


@dataclass
class DataCollatorForDialogues:
    """Right-pads unpacked dialogues; returns input_ids, labels (-100 on padding) and attention_mask."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = _width(features, self.pad_to_multiple_of)
        return {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_token_id, width),
            "labels": _pad([f["labels"] for f in features], IGNORE_INDEX, width),
            "attention_mask": _pad([[1] * len(f["input_ids"]) for f in features], 0, width),
        }
