"""The `starchat eval` commands: scoring a samples file, comparing two runs, bad input."""

import json

from starchat.cli import main


def test_humaneval_samples_prints_pass_at_1(canonical_samples, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "humaneval", "--samples", str(canonical_samples), "--output", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "pass@1 = 1.0000" in printed and "164 problems" in printed
    assert {p.name for p in out.iterdir()} >= {"samples.jsonl", "summary.json", "report.md"}


def test_compare_two_summaries(tmp_path, problems, capsys):
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    tasks = list(problems)[:3]
    good.write_text("".join(json.dumps({"task_id": t, "completion": problems[t]["canonical_solution"]}) + "\n"
                            for t in tasks))
    bad.write_text("".join(json.dumps({"task_id": t, "completion": problems[t]["canonical_solution"] if t != tasks[1]
                                       else "    return None\n"}) + "\n" for t in tasks))
    for f in (good, bad):
        assert main(["eval", "humaneval", "--samples", str(f), "--limit", "3", "--output", str(tmp_path / f.stem),
                     "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "compare", str(tmp_path / "good"), str(tmp_path / "bad" / "summary.json")]) == 0
    table = capsys.readouterr().out
    assert "| pass@1 | 1.0000 | 0.6667 | -0.3333 |" in table
    assert f"Solved only by A (1): {tasks[1]}" in table


def test_bad_samples_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["eval", "humaneval", "--samples", str(bad), "--output", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "bad.jsonl:1: not valid JSON" in capsys.readouterr().err
