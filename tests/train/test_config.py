"""Typed config: YAML + overrides, boolean parsing, unknown keys, --help, and every shipped recipe/config."""

from __future__ import annotations

from pathlib import Path

import pytest

from starchat.cli import main
from starchat.errors import StarchatError
from starchat.train.config import ConfigError, all_keys, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
ACCEL = sorted((REPO / "src" / "starchat" / "train" / "accelerate_configs").glob("*.yaml"))


def _yaml(tmp_path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


BASE = "model:\n  name_or_path: m\ndata:\n  dataset: d\ntraining:\n  output_dir: o\n"


def test_recipes_are_found():
    names = {p.name for p in RECIPES}
    assert {
        "starchat-alpha.yaml",
        "starchat-beta.yaml",
        "nano-cpu.yaml",
        "starchat2-dpo.yaml",
        "nano-cpu-dpo.yaml",
    } <= names
    assert len(RECIPES) >= 7


def test_starchat2_dpo_recipe_has_the_handbook_numbers():
    cfg = load_config(REPO / "recipes" / "starchat2-dpo.yaml")
    t, p = cfg.training, cfg.dpo
    assert cfg.method == "dpo" and cfg.model.name_or_path == "HuggingFaceH4/starchat2-15b-sft-v0.1"
    assert (p.beta, p.max_length, p.max_prompt_length, p.loss_type) == (0.05, 1024, 512, "sigmoid")
    assert (t.learning_rate, t.lr_scheduler_type, t.warmup_ratio, t.num_train_epochs, t.seed) == (
        5e-7,
        "cosine",
        0.1,
        2,
        42,
    )
    assert t.per_device_train_batch_size * t.num_processes * t.gradient_accumulation_steps == 128
    assert t.bf16 and t.accelerate_config == "zero3"


def test_nano_cpu_dpo_recipe_continues_the_nano_loop():
    cfg = load_config(REPO / "recipes" / "nano-cpu-dpo.yaml")
    assert cfg.method == "dpo" and cfg.model.name_or_path == ".runs/nano-cpu"
    assert (cfg.data.dataset, cfg.training.output_dir) == (".runs/data/nano-cpu-pairs", ".runs/nano-cpu-dpo")
    assert cfg.training.use_cpu and not cfg.training.accelerate_config


def test_method_is_a_top_level_key_and_dpo_a_section(tmp_path):
    assert load_config(_yaml(tmp_path, BASE)).method == "sft"
    cfg = load_config(_yaml(tmp_path, "method: dpo\ndpo:\n  beta: 0.2\n" + BASE), ["--dpo.reference", "precomputed"])
    assert (cfg.method, cfg.dpo.beta, cfg.dpo.reference) == ("dpo", 0.2, "precomputed")
    assert load_config(_yaml(tmp_path, BASE), ["--method", "dpo"]).method == "dpo"


def test_sft_runs_keep_their_fingerprint():
    """Output dirs of SFT runs from before `method` existed are still the same run (they resume)."""
    from starchat.train.checkpoint import run_fingerprint
    from starchat.train.config import TrainConfig

    d = TrainConfig().to_dict()
    old = {k: v for k, v in d.items() if k not in ("method", "dpo")}
    assert run_fingerprint(d) == run_fingerprint(old)
    assert run_fingerprint({**d, "method": "dpo"}) != run_fingerprint(d)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates(path):
    cfg = load_config(path)
    assert cfg.training.learning_rate > 0 and cfg.model.name_or_path and cfg.data.dataset


def test_beta_recipe_has_the_card_hyperparameters():
    cfg = load_config(REPO / "recipes" / "starchat-beta.yaml")
    t = cfg.training
    assert (t.learning_rate, t.adam_beta1, t.adam_beta2, t.adam_epsilon) == (2e-5, 0.9, 0.999, 1e-8)
    assert (t.lr_scheduler_type, t.warmup_ratio, t.num_train_epochs, t.seed, t.bf16) == ("cosine", 0.03, 6, 42, True)
    assert t.per_device_train_batch_size * t.num_processes * t.gradient_accumulation_steps == 256
    assert cfg.model.name_or_path == "bigcode/starcoderplus" and t.accelerate_config == "zero3"


@pytest.mark.parametrize("path", ACCEL, ids=lambda p: p.name)
def test_shipped_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.distributed_type.value in ("MULTI_GPU", "DEEPSPEED", "FSDP")


def test_override_types_and_false_is_false(tmp_path):
    p = _yaml(tmp_path, BASE + "  bf16: true\n")
    cfg = load_config(
        p,
        [
            "--training.bf16",
            "false",
            "--training.learning_rate=1e-4",
            "--lora.enabled",
            "--lora.target_modules",
            "q_proj,v_proj",
            "--data.max_train_samples",
            "none",
        ],
    )
    assert cfg.training.bf16 is False and cfg.lora.enabled is True
    assert cfg.training.learning_rate == 1e-4
    assert cfg.lora.target_modules == ["q_proj", "v_proj"] and cfg.data.max_train_samples is None


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'training.learning_rate'"):
        load_config(_yaml(tmp_path, BASE), {"training.learnin_rate": "1"})
    with pytest.raises(ConfigError, match=r"r.yaml: unknown key 'training.epochs'.*num_train_epochs"):
        load_config(_yaml(tmp_path, BASE + "  epochs: 3\n"))


@pytest.mark.parametrize(
    "over, msg",
    [
        ({"training.learning_rate": "0"}, "learning_rate must be > 0"),
        ({"training.learning_rate": "-1e-5"}, "learning_rate must be > 0"),
        ({"training.bf16": "maybe"}, "must be true or false"),
        ({"data.max_length": "1.5"}, "must be an integer"),
        ({"training.report_to": "mlflow"}, "report_to must be one of"),
        ({"training.new_token_lr_multiplier": "0"}, "new_token_lr_multiplier must be > 0"),
        ({"training.learning_rate": "inf"}, "learning_rate must be a finite number"),
        ({"training.max_grad_norm": "nan"}, "max_grad_norm must be a finite number"),
        ({"lora.dropout": "-inf"}, "dropout must be a finite number"),
        ({"training.new_token_lr_multiplier": "10", "training.accelerate_config": "zero3"}, "zero3 shards them"),
        ({"method": "ppo"}, r"method must be one of \('sft', 'dpo'\)"),
        ({"method": "dpo", "dpo.beta": "0"}, "dpo.beta must be > 0"),
        ({"method": "dpo", "dpo.loss_type": "sigmod"}, "dpo.loss_type must be one of"),
        ({"method": "dpo", "dpo.reference": "none"}, "dpo.reference must be one of"),
        ({"method": "dpo", "dpo.max_prompt_length": "1024"}, "the reply needs room"),
        ({"method": "dpo", "training.new_token_lr_multiplier": "50"}, "new_token_lr_multiplier is for SFT"),
        ({"method": "dpo", "data.from_code": "stdlib"}, "data.from_code builds dialogues for SFT"),
    ],
)
def test_bad_values_are_rejected(tmp_path, over, msg):
    with pytest.raises(StarchatError, match=msg):
        load_config(_yaml(tmp_path, BASE), over)


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_a_logger_that_is_not_installed_is_refused_before_training(tmp_path, monkeypatch, logger):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == logger else real(name, *a))
    with pytest.raises(
        ConfigError,
        match=rf"report_to '{logger}' needs the {logger} package; "
        rf"pip install 'starchat\[{logger}\]'",
    ):
        load_config(_yaml(tmp_path, BASE), {"training.report_to": logger})


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"r.yaml: line \d+: not valid YAML"):
        load_config(_yaml(tmp_path, "model:\n  name_or_path: [unclosed\n"))


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_floats_in_a_recipe_are_refused(tmp_path, value):
    with pytest.raises(ConfigError, match=r"r.yaml: training.learning_rate must be a finite number"):
        load_config(_yaml(tmp_path, BASE.replace("training:\n", f"training:\n  learning_rate: {value}\n")))


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", b"model:\n  name_or_path: a\x00b\n"])
def test_a_recipe_that_is_not_text_is_a_one_line_error(tmp_path, capsys, content):
    p = tmp_path / "bin.yaml"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=r"bin.yaml: not a text file"):
        load_config(p)
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a text file" in err


def test_parse_overrides_forms():
    assert parse_overrides(["--a.b", "1", "--c.d=x", "--flag"]) == {"a.b": "1", "c.d": "x", "flag": "true"}


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in all_keys():
        assert f"--{key} " in out


def test_cli_reports_config_errors_as_one_line(tmp_path, capsys):
    assert main(["train", str(_yaml(tmp_path, BASE)), "--training.learning_rat", "1"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'training.learning_rate'" in err and "Traceback" not in err
