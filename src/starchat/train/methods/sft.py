"""`method: sft`: supervised fine-tuning on dialogues, with transformers' Trainer (no section of its own)."""

from __future__ import annotations

from starchat.train.methods import Method

METHOD = Method(name="sft", help="supervised fine-tuning on dialogues", build="starchat.train.sft:build_sft")
