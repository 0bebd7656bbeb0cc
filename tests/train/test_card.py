"""The model card: the results table in the StarChat cards' shape, the plot, and no crash on odd input."""

from __future__ import annotations

from starchat.train.card import render_card, results_table, write_card
from starchat.train.config import TrainConfig

LOG = [
    {"eval_loss": 2.5, "epoch": 0, "step": 0},
    {"loss": 2.9, "epoch": 0.5, "step": 5},
    {"loss": 2.1, "epoch": 1.0, "step": 10},
    {"eval_loss": 1.9, "epoch": 1.0, "step": 10},
    {"loss": 1.5, "epoch": 2.0, "step": 20},
    {"eval_loss": 1.7, "epoch": 2.0, "step": 20},
]


def _cfg() -> dict:
    cfg = TrainConfig()
    cfg.model.name_or_path, cfg.data.dataset, cfg.training.output_dir = "base", "ds", "/x/my-model"
    return cfg.to_dict()


def test_results_table_pairs_each_eval_with_the_mean_train_loss_since_the_previous():
    assert results_table(LOG) == [
        {"train_loss": None, "epoch": 0, "step": 0, "eval_loss": 2.5},
        {"train_loss": 2.5, "epoch": 1.0, "step": 10, "eval_loss": 1.9},
        {"train_loss": 1.5, "epoch": 2.0, "step": 20, "eval_loss": 1.7},
    ]


def test_card_has_the_starchat_sections():
    card = render_card(_cfg(), LOG, end_token_id=49155)
    for part in (
        "# my-model",
        "## Model description",
        "## Intended uses & limitations",
        "## Training procedure",
        "### Training hyperparameters",
        "### Training results",
        "### Framework versions",
        "eos_token_id=49155",
        "<|assistant|>",
        "- Loss: 1.7000",
        "| No log | 0 | 0 | 2.5000 |",
        "| 2.5000 | 1.00 | 10 | 1.9000 |",
    ):
        assert part in card, part


def test_write_card_never_raises(tmp_path):
    bad_log = [{"loss": "not-a-number", "step": "x"}, {"eval_loss": None}]
    assert write_card(tmp_path, {"training": {"output_dir": "o"}}, bad_log, 3) is True
    assert (tmp_path / "README.md").read_text().startswith("# o")
    assert write_card(tmp_path / "missing-dir", _cfg(), LOG, 3) is False


def test_write_card_draws_the_plot(tmp_path):
    assert write_card(tmp_path, _cfg(), LOG, 3)
    assert (tmp_path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "![Training and validation loss](loss_curve.png)" in (tmp_path / "README.md").read_text()


def test_the_snippet_names_the_output_dir_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg()
    cfg["training"]["output_dir"] = ".runs/nano-cpu"
    card = render_card(cfg, LOG, end_token_id=3)
    assert f"model={str(tmp_path / '.runs' / 'nano-cpu')!r}" in card and "# nano-cpu" in card


DPO_LOG = [
    {
        "eval_loss": 0.6931,
        "eval_rewards/chosen": 0.0,
        "eval_rewards/rejected": 0.0,
        "eval_rewards/accuracies": 0.0,
        "eval_rewards/margins": 0.0,
        "epoch": 0,
        "step": 0,
    },
    {"loss": 0.6, "epoch": 1.0, "step": 6},
    {
        "eval_loss": 0.5,
        "eval_rewards/chosen": 0.1,
        "eval_rewards/rejected": -0.3,
        "eval_rewards/accuracies": 0.75,
        "eval_rewards/margins": 0.4,
        "epoch": 1.0,
        "step": 6,
    },
]


def _dpo_cfg() -> dict:
    cfg = _cfg()
    cfg["method"] = "dpo"
    return cfg


def test_dpo_table_has_rewards_accuracy_and_margin_per_evaluation():
    card = render_card(_dpo_cfg(), DPO_LOG, end_token_id=3)
    assert (
        "| Training Loss | Epoch | Step | Validation Loss | Rewards/chosen | Rewards/rejected | "
        "Rewards/accuracies | Rewards/margins |"
    ) in card
    assert "| No log | 0 | 0 | 0.6931 | 0.0000 | 0.0000 | 0.0000 | 0.0000 |" in card
    assert "| 0.6000 | 1.00 | 6 | 0.5000 | 0.1000 | -0.3000 | 0.7500 | 0.4000 |" in card
    assert "- Rewards/margins: 0.4000" in card and "tuned with DPO (beta 0.1, sigmoid loss)" in card
    assert "Perplexity" not in card  # the DPO loss is no language-model loss
    for part in (
        "## Model description",
        "## Intended uses & limitations",
        "### Training hyperparameters",
        "- beta: 0.1",
        "### Framework versions",
    ):
        assert part in card, part


def test_sft_card_has_no_dpo_columns():
    assert "Rewards/" not in render_card(_cfg(), LOG, end_token_id=3)


def test_write_card_draws_the_rewards_plot_for_dpo(tmp_path):
    assert write_card(tmp_path, _dpo_cfg(), DPO_LOG, 3)
    assert (tmp_path / "rewards_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "![Validation rewards and reward accuracy](rewards_curve.png)" in (tmp_path / "README.md").read_text()
