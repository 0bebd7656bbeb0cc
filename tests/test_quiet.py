"""Third-party noise is filtered narrowly: the exact message goes, a real warning from the same logger stays."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from starchat import quiet


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


# (logger, the library's message as it prints it, a real warning of the same logger that must still show)
CASES = [
    (
        "DeepSpeed",
        "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.",
        "Setting accelerator to CUDA failed: no device",
    ),
    (
        "bitsandbytes.backends.cpu.ops",
        (
            "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make sure "
            "you already `pip install kernels` and the kernels >= 0.11.1"
        ),
        (
            "Failed to load CPU gemm_4bit_forward from kernels-community: HTTP 503. Please make sure you already `pip "
            "install kernels` and the kernels >= 0.11.1"
        ),
    ),
    (
        "transformers.trainer",
        "There were missing keys in the checkpoint model loaded: ['lm_head.weight'].",
        "There were missing keys in the checkpoint model loaded: ['lm_head.weight', 'transformer.wte.weight'].",
    ),
    (
        "transformers.generation.configuration_utils",
        "The following generation flags are not valid and may be ignored: ['temperature', 'top_p']. Set "
        "`TRANSFORMERS_VERBOSITY=info` for more details.",
        "The following generation flags are not valid and may be ignored: ['temperature', 'num_beams'].",
    ),
]


@pytest.mark.parametrize("name, noise, real", CASES, ids=[c[0] for c in CASES])
def test_the_noise_goes_and_a_real_warning_of_the_same_logger_stays(name, noise, real):
    logger = logging.getLogger(name)
    seen = _Collect()
    logger.addHandler(seen)
    try:
        quiet.install()
        quiet.install()  # idempotent: one filter per pattern
        logger.warning(noise)
        logger.warning(real)
    finally:
        logger.removeHandler(seen)
    assert seen.messages == [real]
    assert sum(isinstance(f, quiet.MessageFilter) for f in logger.filters) == 1


@pytest.mark.slow  # two interpreters importing DeepSpeed
def test_deepspeed_cpu_notice_is_gone_from_a_starchat_process():
    probe = (
        "import sys; from starchat import quiet\nif sys.argv[1] == 'quiet': quiet.install()\n"
        "from deepspeed.accelerator import get_accelerator; get_accelerator()"
    )
    runs = {
        mode: subprocess.run(
            [sys.executable, "-c", probe, mode], capture_output=True, text=True, timeout=300, check=False
        )
        for mode in ("loud", "quiet")
    }
    notice = "we were unable to detect it"
    if notice not in runs["loud"].stdout + runs["loud"].stderr:
        pytest.skip("this machine has an accelerator DeepSpeed detects: no notice to filter")
    assert runs["quiet"].returncode == 0 and notice not in runs["quiet"].stdout + runs["quiet"].stderr


def test_loading_bars_are_off_a_terminal_and_a_users_setting_wins(tiny_model_dir):
    probe = (
        "import sys; from starchat import quiet\nif sys.argv[2] == 'quiet': quiet.progress_bars_off_a_terminal()\n"
        "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(sys.argv[1])"
    )
    env = {k: v for k, v in os.environ.items() if "PROGRESS_BARS" not in k}

    def run(mode, **extra):
        return subprocess.run(
            [sys.executable, "-c", probe, str(tiny_model_dir), mode],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            env={**env, **extra},
        ).stderr

    assert "Loading weights" in run("loud")  # stderr is a pipe here, as in CI or `2> log`
    assert "Loading weights" not in run("quiet")
    assert "Loading weights" in run("quiet", HF_HUB_DISABLE_PROGRESS_BARS="0")


def test_bars_of_libraries_already_imported_go_too(monkeypatch):
    # a command run from Python (train(), the tests) imports transformers before the CLI's first step could
    import io

    import datasets
    from transformers.utils import logging as hf_logging

    from starchat import quiet

    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    before = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    datasets.enable_progress_bars()
    try:
        quiet.progress_bars_off_a_terminal()
        assert not hf_logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
    finally:  # as it was for the other tests
        hf_logging.enable_progress_bar() if before[0] else hf_logging.disable_progress_bar()
        datasets.enable_progress_bars() if before[1] else datasets.disable_progress_bars()
