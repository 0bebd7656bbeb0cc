"""The `starchat eval` commands: scoring a samples file, comparing two runs, bad input."""

import json

from starchat.cli import main


def test_humaneval_samples_prints_pass_at_1(canonical_samples, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["eval", "humaneval", "--samples", str(canonical_samples), "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "pass@1 = 1.0000" in printed and "164 problems" in printed
    assert {p.name for p in out.iterdir()} >= {"samples.jsonl", "summary.json", "report.md"}


def _humaneval_run(tmp_path, problems, name, wrong=()):
    """A scored run over the first 3 problems, canonical except the ``wrong`` ones."""
    tasks = list(problems)[:3]
    f = tmp_path / f"{name}.jsonl"
    f.write_text(
        "".join(
            json.dumps(
                {"task_id": t, "completion": "    return None\n" if t in wrong else problems[t]["canonical_solution"]}
            )
            + "\n"
            for t in tasks
        )
    )
    assert (
        main(
            [
                "eval",
                "humaneval",
                "--samples",
                str(f),
                "--limit",
                "3",
                "--output",
                str(tmp_path / name),
                "--no-progress",
            ]
        )
        == 0
    )
    return tmp_path / name


def test_compare_three_runs_in_one_markdown_table(tmp_path, problems, capsys):
    tasks = list(problems)[:3]
    good = _humaneval_run(tmp_path, problems, "good")
    bad = _humaneval_run(tmp_path, problems, "bad", wrong={tasks[1]})
    worse = _humaneval_run(tmp_path, problems, "worse", wrong={tasks[0], tasks[1]})
    capsys.readouterr()
    assert main(["eval", "compare", str(good), str(bad / "summary.json"), str(worse), "--markdown"]) == 0
    table = capsys.readouterr().out
    assert "| pass@1 | 1.0000 | 0.6667 (-0.3333) | 0.3333 (-0.6667) |" in table
    assert "| kind | humaneval | humaneval | humaneval |" in table
    assert "| metric | good | bad | worse |" in table  # runs of no model are named by their directories
    assert f"|\n\n- Solved only by good (1): {tasks[1]}\n- Solved only by bad (0): -" in table


def test_compare_runs_of_different_kinds(tmp_path, problems, capsys):
    """A humaneval run, a loss result and a summary of a kind added later (kind + flat metrics)."""
    he = _humaneval_run(tmp_path, problems, "he")
    (tmp_path / "loss.json").write_text(json.dumps({"kind": "loss", "model": "base", "metrics": {"loss": 1.5}}))
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "summary.json").write_text(
        json.dumps({"kind": "judge", "name": "a-vs-b", "metrics": {"win_rate": 0.625}})
    )
    capsys.readouterr()
    assert main(["eval", "compare", str(he), str(tmp_path / "loss.json"), str(tmp_path / "judge")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "he", "base", "a-vs-b"]
    assert lines[2].split() == ["kind", "humaneval", "loss", "judge"]
    assert ["loss", "-", "1.5000", "-"] in [ln.split() for ln in lines]
    assert ["win_rate", "-", "-", "0.6250"] in [ln.split() for ln in lines]


def test_compare_needs_two_runs_and_metrics(tmp_path, capsys):
    (tmp_path / "x.json").write_text(json.dumps({"kind": "judge", "metrics": {"a": "high"}}))
    assert main(["eval", "compare", str(tmp_path / "x.json")]) == 2
    assert "two or more runs" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path / "x.json"), str(tmp_path / "x.json")]) == 2
    assert "field 'metrics' must be a flat object of numbers" in capsys.readouterr().err


def test_bad_samples_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert main(["eval", "humaneval", "--samples", str(bad), "--output", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "bad.jsonl:1: not valid JSON" in capsys.readouterr().err


def test_compare_writes_its_table_into_a_model_card(tmp_path, problems, capsys):
    """--card puts the before/after table into the card before its last section; a rerun of the same title
    replaces that section, another title goes beside it."""
    tasks = list(problems)[:3]
    before = _humaneval_run(tmp_path, problems, "before", wrong={tasks[0]})
    after = _humaneval_run(tmp_path, problems, "after")
    model = tmp_path / "model"
    model.mkdir()
    (model / "README.md").write_text("# m\n\n### Training results\n\nrows\n\n### Framework versions\n\n- x\n")
    for title in ("HumanEval 3", "stdlib-eval", "HumanEval 3"):
        assert main(["eval", "compare", str(before), str(after), "--card", str(model), "--card-title", title]) == 0
    card = (model / "README.md").read_text()
    assert card.count("## Evaluation: before and after") == 1 and card.count("### HumanEval 3") == 1
    assert (
        card.index("### Training results")
        < card.index("### HumanEval 3")
        < card.index("### stdlib-eval")
        < card.index("### Framework versions")
    )
    assert "| pass@1 | 0.6667 | 1.0000 (+0.3333) |" in card
    assert card.count("-->\n\n") == 2  # each section stands apart from the next, after a rerun too
    capsys.readouterr()
    assert main(["eval", "compare", str(before), str(after), "--card", str(tmp_path / "nowhere")]) == 2
    assert "no model card there" in capsys.readouterr().err


def _two_summaries(tmp_path):
    """Two runs as summary.json files (any kind with flat metrics), without running anything."""
    paths = []
    for name, val in (("base", 0.25), ("tuned", 0.5)):
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"kind": "judge", "name": name, "metrics": {"win_rate": val}})
        )
        paths.append(str(tmp_path / f"{name}.json"))
    model = tmp_path / "model"
    model.mkdir()
    return paths, model


CARD = "# m\n\n### Training results\n\nrows\n\n### Framework versions\n\n- x\n"


def test_compare_card_that_is_not_utf8_is_one_line(tmp_path, capsys):
    runs, model = _two_summaries(tmp_path)
    (model / "README.md").write_bytes(CARD.encode("utf-16"))
    assert main(["eval", "compare", *runs, "--card", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "README.md: not UTF-8 text" in err
    assert (model / "README.md").read_bytes() == CARD.encode("utf-16")  # left as it was


def test_compare_card_keeps_its_file_mode(tmp_path):
    import os
    import stat

    runs, model = _two_summaries(tmp_path)
    (model / "README.md").write_text(CARD)
    os.chmod(model / "README.md", 0o664)
    assert main(["eval", "compare", *runs, "--card", str(model)]) == 0
    assert "| win_rate | 0.2500 | 0.5000 (+0.25) |" in (model / "README.md").read_text()
    assert stat.S_IMODE((model / "README.md").stat().st_mode) == 0o664


def test_compare_card_through_a_symlink_writes_its_target(tmp_path):
    runs, model = _two_summaries(tmp_path)
    shared = tmp_path / "cards" / "m.md"
    shared.parent.mkdir()
    shared.write_text(CARD)
    (model / "README.md").symlink_to(shared)
    assert main(["eval", "compare", *runs, "--card", str(model)]) == 0
    assert (model / "README.md").is_symlink()  # the link stays; its target got the table
    assert "| win_rate | 0.2500 | 0.5000 (+0.25) |" in shared.read_text()


def test_compare_card_title_with_a_newline_and_heading_is_flattened(tmp_path, capsys):
    runs, model = _two_summaries(tmp_path)
    (model / "README.md").write_text(CARD)
    title = "HumanEval\n## Evaluation: before and after\n# after <!--"
    for _ in range(2):
        assert main(["eval", "compare", *runs, "--card", str(model), "--card-title", title]) == 0
    card = (model / "README.md").read_text()
    lines = card.splitlines()
    assert "### HumanEval ## Evaluation: before and after # after &lt;!--" in lines
    assert lines.count("## Evaluation: before and after") == 1 and "# after <!--" not in lines
    assert card.count("| win_rate |") == 1  # the rerun replaced its own section
    assert main(["eval", "compare", *runs, "--card", str(model), "--card-title", " \n## "]) == 2
    assert "has no text" in capsys.readouterr().err


def test_compare_card_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    runs, model = _two_summaries(tmp_path)
    (model / "README.md").write_text(CARD)

    def read_only(path, text):  # what a read-only model folder does to the atomic write (root ignores chmod)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("starchat.eval.report.write_atomic", read_only)
    assert main(["eval", "compare", *runs, "--card", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write the model card (Permission denied" in err
