"""Narrow filters for third-party messages that alarm a starchat user without meaning anything for them.

Each filter names one logger (or llama.cpp's log) and one message pattern; every other message of the
same logger still shows. Why each one is noise here is written beside it, and in the docs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import threading

# (logger, message pattern): the exact record to drop, and why it means nothing for a starchat user.
LOG_NOISE = (
    # Printed at import by DeepSpeed (pulled in by accelerate/transformers) on any machine without a GPU;
    # the training run's own plan line says which device it uses.
    (
        "DeepSpeed",
        (
            r"^Setting accelerator to CPU\. If you have GPU or other accelerator, we were unable to "
            r"detect it\.$"
        ),
    ),
    # bitsandbytes on an AVX512-BF16 CPU tries to fetch a faster 4-bit kernel from the Hugging Face hub
    # (the `kernels` package), on every run, even without 4-bit layers; its own fallback computes the same.
    (
        "bitsandbytes.backends.cpu.ops",
        (
            r"^Failed to load CPU gemm_4bit_forward from kernels-community: "
            r"No module named 'kernels'"
        ),
    ),
    # Loading the best checkpoint of a model whose lm_head is tied to its embeddings: checkpoints do not
    # store the tied copy, and the loaded embeddings are the lm_head. Any other missing key still shows.
    ("transformers.trainer", r"^There were missing keys in the checkpoint model loaded: \['lm_head\.weight'\]\.$"),
    # Greedy decoding with a model whose generation_config.json sets sampling knobs (SmolLM2: temperature,
    # top_p): starchat's transformers engine samples with its own processor and switches transformers' off on
    # purpose, so those knobs are ignored by design. Any other flag named there still shows.
    (
        "transformers.generation.configuration_utils",
        r"^The following generation flags are not valid and may be ignored: \[(?:'(?:temperature|top_p|top_k)'(?:, )?)+\]",
    ),
)


class MessageFilter(logging.Filter):
    """Drops the records of one logger whose message matches a pattern."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def progress_bars_off_a_terminal() -> None:
    """Off a terminal (CI, a pipe, a log file), the tqdm bars of transformers (loading weights), the hub and
    datasets go: each redraw is a carriage-return line there, and our own console reports the outcome. Set
    through the environment variables the libraries read when imported (the CLI calls this first), and for
    a library already imported (a command run from Python) through its own switch. A value the user set
    wins, and in a terminal the bars stay."""
    if sys.stderr is None or sys.stderr.isatty():
        return
    off = {
        var: os.environ.setdefault(var, "1") == "1"
        for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")
    }
    if off["HF_HUB_DISABLE_PROGRESS_BARS"] and "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if off["HF_DATASETS_DISABLE_PROGRESS_BARS"] and "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


def install() -> None:
    """Attach the filters (once): to the loggers themselves, so no handler anywhere prints those records."""
    for name, pattern in LOG_NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MessageFilter) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(MessageFilter(pattern))


# llama.cpp's log levels (ggml.h, the llama.cpp that llama-cpp-python 0.3.36 bundles): its Python logger
# maps an older numbering, so a WARN prints even with verbose=False while real errors are hidden.
GGML_WARN, GGML_ERROR, GGML_CONT = 3, 4, 5
_lock = threading.RLock()  # re-entrant: a filter inside a filter waits for nothing
_state = {"drop": (), "seen": None, "callback": None, "last_dropped": False}


def _llama_log(level: int, text: bytes, user_data) -> None:
    import llama_cpp._logger as original

    message = text.decode("utf-8", "replace")
    if level == GGML_CONT and _state["last_dropped"]:
        return
    dropped = any(p.search(message) for p in _state["drop"])
    _state["last_dropped"] = dropped
    if dropped:
        if _state["seen"] is not None:
            _state["seen"].append(message)
        return
    original.llama_log_callback(level, text, user_data)  # llama-cpp-python's own rule for the rest


class llama_log_filter:
    """Within the block, llama.cpp log lines matching ``patterns`` are not printed (collected in ``.seen``);
    every other line goes to llama-cpp-python's handler as before."""

    def __init__(self, *patterns: str):
        self.patterns = tuple(re.compile(p) for p in patterns)
        self.seen: list[str] = []

    def __enter__(self):
        import llama_cpp

        _lock.acquire()  # one thread's filter at a time: the callback is process-wide
        if _state["callback"] is None:
            _state["callback"] = llama_cpp.llama_log_callback(_llama_log)  # kept alive: C holds the pointer
        self._outer = (_state["drop"], _state["seen"])
        _state["drop"], _state["seen"] = self.patterns + _state["drop"], self.seen
        llama_cpp.llama_log_set(_state["callback"], ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc):
        import llama_cpp
        import llama_cpp._logger as original

        try:
            _state["drop"], _state["seen"] = self._outer
            if not _state["drop"]:  # the outermost filter: llama-cpp-python's handler again
                llama_cpp.llama_log_set(original.llama_log_callback, ctypes.c_void_p(0))
        finally:
            _lock.release()
        return False
