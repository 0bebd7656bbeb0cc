"""`method: dpo`: the loss mask (reply + <|end|>, never the prompt), a run that raises the chosen-minus-rejected
margin, the card's DPO table and plot, the reference modes, LoRA, resume after a kill and the finished rerun."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from test_resume import KillAfterSave, Killed  # tests/train is on sys.path (rootdir conftest)
from transformers import TrainerCallback

from starchat.templates import render
from starchat.train import load_config, train
from starchat.train.checkpoint import COMPLETE_MARKER
from starchat.train.run import build


def _logp_margin(model_dir, pairs) -> float:
    """Mean over pairs of log p(chosen reply + <|end|> | prompt) - log p(rejected reply + <|end|> | prompt),
    computed here from the rendered strings, independently of the trainer's tokenization."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def logp(prompt_ids, reply):
        ids = prompt_ids + tok(reply + "<|end|>", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
        targets = torch.tensor(ids[1:])
        return logits[torch.arange(len(targets)), targets][len(prompt_ids) - 1 :].sum().item()

    margins = []
    for row in pairs:
        prompt_ids = tok(render(row["prompt"], add_generation_prompt=True) + "\n", add_special_tokens=False)[
            "input_ids"
        ]
        margins.append(logp(prompt_ids, row["chosen"][0]["content"]) - logp(prompt_ids, row["rejected"][0]["content"]))
    return sum(margins) / len(margins)


def _history(out):
    return json.loads((out / "trainer_results.json").read_text())["log_history"]


def test_completions_are_the_reply_and_its_end_token_and_the_prompt_is_never_in_the_loss(
    make_dpo_overrides, tmp_path, pairs_dir
):
    import datasets

    trainer, tok, stats, _ = build(load_config(None, make_dpo_overrides(tmp_path)))
    end = tok.convert_tokens_to_ids("<|end|>")
    raw = datasets.load_from_disk(str(pairs_dir))["train"]
    ds = trainer.train_dataset
    assert len(ds) == len(raw) == stats["train_tokenize"]["kept"]
    for row, pair in zip(ds, raw):
        assert tok.decode(row["prompt_ids"]) == render(pair["prompt"], add_generation_prompt=True) + "\n"
        for col in ("chosen", "rejected"):
            assert row[f"{col}_ids"][-1] == end  # not the newline the template writes after <|end|>
            assert tok.decode(row[f"{col}_ids"]) == pair[col][0]["content"] + "<|end|>"
    # TRL's collator: the positions that count in the loss are exactly the completion's tokens.
    batch = trainer.data_collator([ds[i] for i in range(4)])
    n = 4
    for i in range(n):
        for half, col in ((0, "chosen"), (n, "rejected")):
            ids, mask = batch["input_ids"][half + i], batch["completion_mask"][half + i]
            assert ids[mask.bool()].tolist() == ds[i][f"{col}_ids"]
            assert mask[: len(ds[i]["prompt_ids"])].sum() == 0  # no prompt token in the loss


def test_an_overlong_prompt_keeps_its_end_and_an_overlong_pair_is_dropped(make_dpo_overrides, tmp_path):
    over = make_dpo_overrides(tmp_path)
    # The 8 prompts with a system turn and an earlier exchange have 45-46 tokens, the others 20-21.
    over.update({"dpo.max_prompt_length": 30, "dpo.max_length": 51})
    trainer, tok, stats, _ = build(load_config(None, over))
    s = stats["train_tokenize"]
    assert s["truncated_prompts"] == 8 and 0 < s["dropped_too_long"] < 8
    assert s["kept"] == len(trainer.train_dataset) == s["pairs"] - s["dropped_too_long"]
    for row in trainer.train_dataset:
        assert len(row["prompt_ids"]) <= 30 and tok.decode(row["prompt_ids"]).endswith("<|assistant|>\n")
        assert len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 51
        assert row["chosen_ids"][-1] == row["rejected_ids"][-1] == tok.convert_tokens_to_ids("<|end|>")


@pytest.fixture(scope="module")
def dpo_run(make_dpo_overrides, tmp_path_factory):
    over = make_dpo_overrides(tmp_path_factory.mktemp("dpo"))
    over["training.eval_on_start"] = True
    return over, train(load_config(None, over))


@pytest.mark.slow
def test_dpo_raises_the_chosen_minus_rejected_margin_on_its_training_pairs(dpo_run, tiny_model_dir, pairs_dir):
    import datasets

    _, out = dpo_run
    pairs = list(datasets.load_from_disk(str(pairs_dir))["train"])
    before, after = _logp_margin(tiny_model_dir, pairs), _logp_margin(out, pairs)
    assert after > before + 5, (before, after)
    evals = [e for e in _history(out) if "eval_loss" in e]
    assert evals[0]["eval_rewards/margins"] == pytest.approx(0, abs=1e-5)  # the start: policy == reference
    assert evals[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert evals[-1]["eval_rewards/margins"] > 0.5 and evals[-1]["eval_rewards/accuracies"] == 1.0


@pytest.mark.slow
def test_the_final_model_is_the_checkpoint_of_lowest_validation_loss(dpo_run):
    _, out = dpo_run
    res = json.loads((out / "trainer_results.json").read_text())
    evals = [(e["step"], e["eval_loss"]) for e in res["log_history"] if "eval_loss" in e]
    best_step = min(evals[1:], key=lambda x: x[1])[0]  # checkpoints exist from the first epoch on
    assert res["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    final, best = load_file(out / "model.safetensors"), load_file(f"{res['best_checkpoint']}/model.safetensors")
    for name, t in best.items():
        assert (final[name] - t).abs().max().item() == 0, name


@pytest.mark.slow
def test_card_has_the_dpo_table_the_rewards_plot_and_a_snippet_path_that_works_anywhere(dpo_run, tmp_path, monkeypatch):
    _, out = dpo_run
    card = (out / "README.md").read_text()
    assert (
        "| Training Loss | Epoch | Step | Validation Loss | Rewards/chosen | Rewards/rejected | "
        "Rewards/accuracies | Rewards/margins |"
    ) in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and "Loss" not in line]
    evals = [e for e in _history(out) if "eval_loss" in e]
    assert len(rows) == len(evals) == 3  # the start and one evaluation per epoch
    last = evals[-1]
    assert rows[-1].endswith(
        f"| {last['eval_rewards/chosen']:.4f} | {last['eval_rewards/rejected']:.4f} | "
        f"{last['eval_rewards/accuracies']:.4f} | {last['eval_rewards/margins']:.4f} |"
    )
    assert (out / "rewards_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "![Validation rewards and reward accuracy](rewards_curve.png)" in card
    for part in (
        "## Model description",
        "## Intended uses & limitations",
        "### Training hyperparameters",
        "- beta: 0.1",
        "- reference: model",
        "### Framework versions",
    ):
        assert part in card, part
    # The usage snippet's model path loads from any directory.
    from transformers import pipeline

    path = card.split('pipeline("text-generation", model=')[1].split(",")[0].strip("'\"")
    monkeypatch.chdir(tmp_path)
    pipe = pipeline("text-generation", model=path, device="cpu")
    assert pipe.tokenizer.eos_token == "<|end|>"


@pytest.mark.slow
def test_a_killed_dpo_run_resumes_and_ends_where_an_uninterrupted_one_ends(make_dpo_overrides, tmp_path, caplog):
    def over(tmp):
        o = make_dpo_overrides(tmp)
        o.update(
            {
                "training.save_strategy": "steps",
                "training.save_steps": 3,
                "training.eval_strategy": "steps",
                "training.eval_steps": 3,
                "training.load_best_model_at_end": False,
                "training.save_total_limit": 5,
            }
        )
        return o

    ref = train(load_config(None, over(tmp_path / "a")))
    with pytest.raises(Killed):
        train(load_config(None, over(tmp_path / "b")), callbacks=[KillAfterSave(6)])
    ckpts = tmp_path / "b" / "dpo-run" / "checkpoints"
    (ckpts / "checkpoint-6" / COMPLETE_MARKER).unlink()  # killed while writing checkpoint-6
    with caplog.at_level("WARNING", logger="starchat.train.run"):
        resumed = train(load_config(None, over(tmp_path / "b")))
    assert f"resuming from {ckpts}/checkpoint-3" in caplog.text
    a, b = _history(ref), _history(resumed)
    assert [e["step"] for e in a if "eval_loss" in e] == [e["step"] for e in b if "eval_loss" in e]
    assert a[-1]["step"] == b[-1]["step"] == 12
    assert [e["eval_loss"] for e in b if "eval_loss" in e] == pytest.approx(
        [e["eval_loss"] for e in a if "eval_loss" in e], rel=1e-3
    )
    w_ref, w_res = load_file(ref / "model.safetensors"), load_file(resumed / "model.safetensors")
    for name, t in w_ref.items():
        assert (w_res[name] - t).abs().max().item() < 1e-4, name


def as_recipe(over: dict, path):
    """The overrides as a recipe YAML file (top-level keys and sections)."""
    import yaml

    doc: dict = {}
    for key, value in over.items():
        section, _, name = key.partition(".")
        if name:
            doc.setdefault(section, {})[name] = value
        else:
            doc[section] = value
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_a_finished_dpo_run_rerun_changes_nothing(dpo_run, tmp_path, capsys):
    from starchat.cli import main

    over, out = dpo_run
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert train(load_config(None, over)) == out
    assert main(["train", str(as_recipe(over, tmp_path / "r.yaml"))]) == 0
    assert "training already finished" in capsys.readouterr().out
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before)


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["model", "precomputed"])
def test_the_reference_is_the_starting_model(make_dpo_overrides, tmp_path, reference):
    """At step 1 the policy is the reference, so the DPO loss is ln 2 whichever way the reference is kept."""
    over = make_dpo_overrides(tmp_path)
    over.update({"dpo.reference": reference, "training.max_steps": 1, "data.test_split": ""})
    trainer, *_ = build(load_config(None, over))
    assert (trainer.ref_model is None) == (reference == "precomputed")
    if reference == "precomputed":
        assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(trainer.train_dataset.column_names)
    trainer.train()
    first = next(e for e in trainer.state.log_history if "loss" in e)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert first["rewards/margins"] == pytest.approx(0, abs=1e-5)


@pytest.mark.slow
def test_lora_dpo_trains_adapters_against_the_base(make_dpo_overrides, tmp_path):
    over = make_dpo_overrides(tmp_path)
    over.update({"lora.enabled": True, "lora.r": 4, "lora.alpha": 8, "training.num_train_epochs": 1})
    out = train(load_config(None, over))
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    hist = _history(out)
    assert next(e for e in hist if "loss" in e)["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert [e for e in hist if "eval_loss" in e][-1]["eval_rewards/margins"] > 0


@pytest.mark.slow
def test_qlora_dpo_on_a_4bit_base(make_dpo_overrides, make_plain_base, tmp_path):
    """bitsandbytes' CPU 4-bit kernels: adapters train against the 4-bit base with the adapters off."""
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.templates import prepare_tokenizer
    from starchat.train.model import resize_embeddings

    plain = make_plain_base(128, seed=3)  # 128 wide: bitsandbytes' CPU packing needs blocks of 64
    start = tmp_path / "sft-128"
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(plain))
    model = AutoModelForCausalLM.from_pretrained(plain)
    resize_embeddings(model, len(tok))
    model.save_pretrained(start)
    tok.save_pretrained(start)
    seen = {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen["4bit"] = sum(
                type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")
                for m in model.modules()
            )
            seen["trainable"] = [n for n, p in model.named_parameters() if p.requires_grad]

    over = make_dpo_overrides(tmp_path)
    over.update(
        {
            "model.name_or_path": str(start),
            "model.load_in_4bit": True,
            "lora.enabled": True,
            "lora.r": 8,
            "lora.alpha": 16,
            "training.num_train_epochs": 1,
            "training.learning_rate": 1e-2,
        }
    )
    out = train(load_config(None, over), callbacks=[Inspect()])
    assert seen["4bit"] == 8 and seen["trainable"] and all("lora_" in n for n in seen["trainable"])
    hist = _history(out)
    assert next(e for e in hist if "loss" in e)["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert [e for e in hist if "eval_loss" in e][-1]["eval_rewards/margins"] > 0
    assert (out / "adapter_model.safetensors").is_file()


def test_a_jsonl_of_pairs_is_read_too(make_dpo_overrides, pairs_dir, tmp_path):
    import datasets

    path = tmp_path / "pairs.jsonl"
    datasets.load_from_disk(str(pairs_dir))["train"].to_json(str(path))
    over = make_dpo_overrides(tmp_path)
    over.update({"data.dataset": str(path), "data.test_split": ""})
    trainer, *_ = build(load_config(None, over))
    assert len(trainer.train_dataset) == 24 and trainer.eval_dataset is None


@pytest.mark.slow
def test_the_nano_cpu_dpo_recipe_runs_on_a_tiny_stand_in(tiny_model_dir, pairs_dir, tmp_path):
    """The shipped recipe's settings (precomputed reference, baseline evaluation, per-epoch checkpoints)
    with the tiny model and pairs standing in for .runs/nano-cpu and its sampled pairs."""
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "nano-cpu-dpo.yaml"
    cfg = load_config(
        recipe,
        {
            "model.name_or_path": str(tiny_model_dir),
            "data.dataset": str(pairs_dir),
            "training.output_dir": str(tmp_path / "nano-dpo"),
            "training.disable_tqdm": True,
        },
    )
    out = train(cfg)
    evals = [e for e in _history(out) if "eval_loss" in e]
    assert len(evals) == 3 and evals[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert "- reference: precomputed" in (out / "README.md").read_text()
