"""Training methods are a registry: a new method is one new module plus one line in methods.REGISTRY."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import starchat
from starchat.train.config import ConfigError, TrainConfig, load_config
from starchat.train.methods import METHODS, get_method

TOY = '''
"""`method: toy`: a method added for the test, as docs/_incoming/house-b.md says."""
from dataclasses import dataclass

from starchat.options import setting
from starchat.train.methods import Method


@dataclass
class ToyConfig:
    alpha: int = setting(3, "How toy the run is.")


def validate_toy(cfg, where):
    from starchat.train.config import ConfigError

    if cfg.toy.alpha < 0:
        raise ConfigError(f"{where}: toy.alpha must be >= 0")


def build_toy(cfg, run_dir, resume, callbacks=None):
    return ("toy trainer", cfg.toy.alpha, run_dir.name, resume)


METHOD = Method(name="toy", help="a toy", build=build_toy, section="toy", section_class=ToyConfig,
                validate=validate_toy)
'''

PROBE = """
import json, sys
from starchat.cli import main
from starchat.train.checkpoint import run_fingerprint
from starchat.train.config import ConfigError, TrainConfig, load_config
from starchat.train.run import build

base = {"model.name_or_path": "m", "data.dataset": "d", "training.output_dir": sys.argv[1]}
cfg = load_config(None, {**base, "method": "toy", "toy.alpha": "5"})
out = {"built": list(build(cfg)), "sft_fingerprint": run_fingerprint(TrainConfig().to_dict())}
try:
    load_config(None, {**base, "method": "toy", "toy.alpha": "-1"})
except ConfigError as e:
    out["error"] = str(e)
print(json.dumps(out))
main(["train", "--help"])
"""


def test_sft_and_dpo_are_registered_with_their_sections():
    assert list(METHODS) == ["sft", "dpo"]
    assert get_method("dpo").section == "dpo" and get_method("sft").section is None
    assert [f for f in TrainConfig.__dataclass_fields__] == ["method", "model", "data", "training", "lora", "dpo"]


def test_an_unregistered_method_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"method must be one of \('sft', 'dpo'\), got 'ppo'"):
        load_config(
            None,
            {"method": "ppo", "model.name_or_path": "m", "data.dataset": "d", "training.output_dir": str(tmp_path)},
        )


def test_a_new_method_is_one_file_and_one_registry_line(tmp_path):
    """Copy the package, add methods/toy.py and its REGISTRY line: recipes, validation, `train --help`, the
    builder dispatch all take it, and SFT runs keep their fingerprint (they resume)."""
    from starchat.train.checkpoint import run_fingerprint

    pkg = tmp_path / "src" / "starchat"
    shutil.copytree(Path(starchat.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    methods = pkg / "train" / "methods"
    (methods / "toy.py").write_text(textwrap.dedent(TOY))
    init = methods / "__init__.py"
    text = init.read_text()
    assert text.count('    "starchat.train.methods.dpo",\n') == 1
    init.write_text(
        text.replace(
            '    "starchat.train.methods.dpo",\n',
            '    "starchat.train.methods.dpo",\n    "starchat.train.methods.toy",\n',
        )
    )
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    first, help_text = run.stdout.split("\n", 1)
    out = json.loads(first)
    assert out["built"] == ["toy trainer", 5, "checkpoints", None]
    assert out["error"] == "config: toy.alpha must be >= 0"
    assert out["sft_fingerprint"] == run_fingerprint(TrainConfig().to_dict())
    assert "--toy.alpha int (default: 3)" in help_text and "{sft,dpo,toy}" in help_text
