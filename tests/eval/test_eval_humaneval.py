"""HumanEval scoring end to end: canonical solutions, bare prompts, outputs, resume, and generation."""

import json

from eval_fakes import FakeEngine, FakeParams, write_samples

from starchat.eval import humaneval
from starchat.eval.humaneval import HumanEvalConfig, run_model, score_samples


def test_all_canonical_solutions_pass(canonical_samples, tmp_path):
    summary = score_samples(canonical_samples, HumanEvalConfig(output=tmp_path / "out", progress=False))
    assert summary["num_problems"] == 164
    assert summary["pass_at_k"] == {"pass@1": 1.0}


def test_bare_prompts_score_zero(tmp_path, problems):
    samples = write_samples(tmp_path / "bare.jsonl", [{"task_id": t, "completion": ""} for t in problems])
    summary = score_samples(samples, HumanEvalConfig(output=tmp_path / "out", progress=False))
    assert summary["num_samples"] == 164 and summary["pass_at_k"] == {"pass@1": 0.0}


def test_outputs_are_written(tmp_path, problems):
    rows = [
        {"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]},
        {"task_id": "HumanEval/0", "completion": "    return False\n"},
        {"task_id": "HumanEval/1", "completion": "    return []\n"},
    ]
    out = tmp_path / "out"
    summary = score_samples(
        write_samples(tmp_path / "s.jsonl", rows), HumanEvalConfig(output=out, limit=2, progress=False)
    )
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted((r["task_id"], r["sample_index"], r["passed"]) for r in lines) == [
        ("HumanEval/0", 0, True),
        ("HumanEval/0", 1, False),
        ("HumanEval/1", 0, False),
    ]
    assert {"prompt", "raw", "program", "error", "status"} <= set(lines[0])
    assert json.loads((out / "summary.json").read_text())["per_task"]["HumanEval/0"] == {"n": 2, "correct": 1}
    assert summary["pass_at_k"]["pass@1"] == 0.25  # (1/2 + 0/1) / 2
    assert "pass@1 | 0.2500" in (out / "report.md").read_text()


def test_resume_runs_only_missing_samples(tmp_path, problems, monkeypatch):
    rows = [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in list(problems)[:6]]
    samples, out = write_samples(tmp_path / "s.jsonl", rows), tmp_path / "out"
    score_samples(samples, HumanEvalConfig(output=out, limit=6, progress=False))
    log = out / "samples.jsonl"
    kept = log.read_text().splitlines()[:4]
    log.write_text("\n".join(kept) + '\n{"task_id": "Human')  # interrupted mid-line
    ran = []
    real = humaneval.run_many
    monkeypatch.setattr(humaneval, "run_many", lambda jobs, *a, **k: ran.extend(jobs) or real(jobs, *a, **k))
    summary = score_samples(samples, HumanEvalConfig(output=out, limit=6, progress=False))
    assert len(ran) == 2
    assert summary["num_samples"] == 6 and summary["pass_at_k"] == {"pass@1": 1.0}
    assert len(log.read_text().splitlines()) == 6


def test_generation_with_a_chat_engine(tmp_path, problems):
    engine = FakeEngine(problems, wrong={"HumanEval/2"})
    cfg = HumanEvalConfig(output=tmp_path / "out", limit=4, n_samples=2, batch_size=8, progress=False)
    summary = run_model(engine, cfg, "fake", make_params=FakeParams)
    assert summary["per_task"]["HumanEval/2"] == {"n": 2, "correct": 0}
    assert summary["pass_at_k"]["pass@1"] == 0.75
    seeds = sorted(params.seed for _, params in engine.calls)
    assert seeds == [0, 1]  # one seed per sample index, so samples of a problem differ
    assert all(params.stop == [] for _, params in engine.calls)


def test_generation_with_prefill_sends_token_ids(tmp_path, problems):
    engine = FakeEngine(problems)
    cfg = HumanEvalConfig(output=tmp_path / "out", limit=3, prefill=True, progress=False)
    summary = run_model(engine, cfg, "fake", make_params=FakeParams)
    prompts, params = engine.calls[0]
    text = "".join(chr(i) for i in prompts[0])
    assert text.endswith("<|assistant|>\n```python\n" + problems["HumanEval/0"]["prompt"])
    assert params.stop == ["\n```"]
    assert summary["pass_at_k"]["pass@1"] == 1.0


def test_a_rerun_with_a_larger_limit_extends_the_run(tmp_path, problems):
    out = tmp_path / "out"
    run_model(
        FakeEngine(problems), HumanEvalConfig(output=out, limit=2, progress=False), "fake", make_params=FakeParams
    )
    engine = FakeEngine(problems, wrong={"HumanEval/3"})
    summary = run_model(engine, HumanEvalConfig(output=out, limit=4, progress=False), "fake", make_params=FakeParams)
    asked = [engine._problem(p)[0]["task_id"] for prompts, _ in engine.calls for p in prompts]
    assert asked == ["HumanEval/2", "HumanEval/3"]  # only the new problems were generated
    assert summary["num_problems"] == 4 and summary["pass_at_k"]["pass@1"] == 0.75  # the summary covers all
    assert summary["limit"] == 4 and json.loads((out / "summary.json").read_text())["num_problems"] == 4


def test_a_rerun_with_other_settings_names_the_setting_old_and_new(tmp_path, problems):
    import pytest

    from starchat.errors import StarchatError

    out = tmp_path / "out"
    run_model(
        FakeEngine(problems), HumanEvalConfig(output=out, limit=1, progress=False), "fake", make_params=FakeParams
    )
    with pytest.raises(StarchatError) as e:
        run_model(
            FakeEngine(problems),
            HumanEvalConfig(output=out, limit=1, temperature=0.8, progress=False),
            "fake",
            make_params=FakeParams,
        )
    assert str(e.value) == (
        f"{out} holds a run with other settings (temperature was 0.2, now 0.8): "
        "use another --output, or delete it to start over"
    )


def test_a_sample_too_deep_to_parse_is_scored_and_the_run_finishes(tmp_path, problems):
    deep = "    return " + "+".join(["1"] * 10_000) + "\n"
    rows = [
        {"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]},
        {"task_id": "HumanEval/0", "completion": deep},
        {"task_id": "HumanEval/1", "completion": "    return []\n"},
    ]
    out = tmp_path / "out"
    summary = score_samples(
        write_samples(tmp_path / "s.jsonl", rows), HumanEvalConfig(output=out, limit=2, progress=False)
    )
    assert summary["num_samples"] == 3 and (out / "report.md").exists()
    logged = {
        (r["task_id"], r["sample_index"]): r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())
    }
    assert logged[("HumanEval/0", 1)]["flags"]["syntax"] == 1 and not logged[("HumanEval/0", 1)]["passed"]
    assert logged[("HumanEval/0", 0)]["passed"]
