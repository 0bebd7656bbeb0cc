"""`eval humaneval` reports, beside pass@k, the shares of replies that do not compile, carry bandit
findings, or ran to the token limit; `eval compare` shows them side by side. Also the stdlib-eval set."""

import json

from eval_fakes import FakeCompletion, FakeEngine, FakeParams, write_samples

from starchat.eval.humaneval import HumanEvalConfig, run_model, score_samples
from starchat.eval.report import compare


class FlaggedEngine(FakeEngine):
    """HumanEval/0 gets a non-compiling reply, HumanEval/1 an insecure one, HumanEval/2 is cut off."""

    def generate_batch(self, prompts, params):
        out = super().generate_batch(prompts, params)
        for i, prompt in enumerate(prompts):
            task = self._problem(prompt)[0]["task_id"]
            if task == "HumanEval/0":
                out[i] = FakeCompletion("```python\ndef has_close_elements(numbers, threshold)\n    return True\n```")
            elif task == "HumanEval/1":
                out[i] = FakeCompletion(
                    "```python\nimport hashlib\n\ndef separate_paren_groups(s):\n"
                    "    return [hashlib.md5(s.encode()).hexdigest()]\n```"
                )
            elif task == "HumanEval/2":
                out[i] = FakeCompletion(
                    "```python\ndef truncate_number(number):\n    return number % 1.0\n", finish_reason="length"
                )
        return out


def test_flagged_shares_in_summary_report_and_compare(tmp_path, problems):
    cfg = HumanEvalConfig(output=tmp_path / "a", limit=4, progress=False)
    summary = run_model(FlaggedEngine(problems), cfg, "flagged", make_params=FakeParams)
    assert summary["flagged"] == {"syntax": 0.25, "security": 0.25, "cut_off": 0.25}
    assert summary["pass_at_k"]["pass@1"] == 0.5  # the cut-off reply's code still passes
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert saved["flagged"] == summary["flagged"]
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| Python that does not compile | 0.2500 |" in report and "| cut off at the token limit | 0.2500 |" in report
    clean = run_model(
        FakeEngine(problems),
        HumanEvalConfig(output=tmp_path / "b", limit=4, progress=False),
        "clean",
        make_params=FakeParams,
    )
    assert clean["flagged"] == {"syntax": 0.0, "security": 0.0, "cut_off": 0.0}
    table = compare([tmp_path / "a", tmp_path / "b"], markdown_table=True)
    assert "| share with bandit findings | 0.2500 | 0.0000 (-0.25) |" in table
    assert "| share cut off at the token limit | 0.2500 | 0.0000 (-0.25) |" in table


def test_samples_without_finish_reason_leave_cut_off_unknown(tmp_path, problems):
    rows = [
        {"task_id": "HumanEval/0", "completion": "    return (\n"},
        {"task_id": "HumanEval/1", "completion": problems["HumanEval/1"]["canonical_solution"]},
    ]
    summary = score_samples(
        write_samples(tmp_path / "s.jsonl", rows), HumanEvalConfig(output=tmp_path / "o", limit=2, progress=False)
    )
    assert summary["flagged"] == {"syntax": 0.5, "security": 0.0, "cut_off": None}
    assert "| cut off at the token limit | - |" in (tmp_path / "o" / "report.md").read_text()


class StdlibEngine:
    """Answers each stdlib-eval problem with its code prompt and a body that returns None."""

    def encode_prompt(self, messages, add_generation_prompt=True):
        return [0]

    def generate_batch(self, prompts, params):
        out = []
        for p in prompts:
            code = p[-1]["content"].split("```python\n", 1)[1].rsplit("\n```", 1)[0]
            out.append(FakeCompletion(f"```python\n{code}\n    return None\n```"))
        return out


def test_stdlib_eval_runs_as_a_problems_set(tmp_path):
    cfg = HumanEvalConfig(output=tmp_path / "s", progress=False, problems_file="stdlib-eval", limit=3)
    summary = run_model(StdlibEngine(), cfg, "stub", make_params=FakeParams)
    assert summary["num_problems"] == 3 and summary["pass_at_k"]["pass@1"] == 0.0
    assert all(t.startswith("stdlib/") for t in summary["per_task"])
    assert summary["flagged"]["syntax"] == 0.0
