"""`starchat eval lm-eval`: a local multiple-choice task through lm-evaluation-harness on the tiny model, offline."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from starchat.cli import main
from starchat.errors import StarchatError

TASK_DIR = Path(__file__).parent / "lm_eval_task"
needs_lm_eval = pytest.mark.skipif(
    importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed: pip install 'starchat[lm-eval]'"
)


@pytest.fixture
def task_dir(tmp_path):
    """The task YAMLs with their data file's absolute path filled in (lm-eval reads `data_files` from the cwd)."""
    d = tmp_path / "tasks"
    d.mkdir()
    for name in ("starchat_tiny_mc", "starchat_tiny_gen"):
        text = (TASK_DIR / f"{name}.yaml.in").read_text().replace("@DATA@", str(TASK_DIR / "capitals.jsonl"))
        (d / f"{name}.yaml").write_text(text)
    return d


@pytest.mark.slow
@needs_lm_eval
def test_local_task_with_chat_template_lands_in_the_summary(tiny_model_dir, task_dir, tmp_path, monkeypatch, capsys):
    from lm_eval.models.huggingface import HFLM

    rendered = []
    original = HFLM.apply_chat_template

    def spy(self, chat_history, *a, **kw):
        out = original(self, chat_history, *a, **kw)
        rendered.append(out)
        return out

    monkeypatch.setattr(HFLM, "apply_chat_template", spy)
    out = tmp_path / "run"
    assert (
        main(
            [
                "eval",
                "lm-eval",
                "--model",
                str(tiny_model_dir),
                "--tasks",
                "starchat_tiny_mc",
                "--include-path",
                str(task_dir),
                "--apply-chat-template",
                "--device",
                "cpu",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "lm-eval"
    acc = summary["metrics"]["acc[starchat_tiny_mc]"]
    assert 0.0 <= acc <= 1.0 and acc * 6 == pytest.approx(round(acc * 6))  # a share of the 6 documents
    assert "acc_norm[starchat_tiny_mc]" in summary["metrics"] and "acc_stderr[starchat_tiny_mc]" in summary["metrics"]
    assert summary["n_samples"]["starchat_tiny_mc"]["effective"] == 6
    # each request went through the model's own chat template (the StarChat format of the tiny model)
    assert len(rendered) == 6
    assert rendered[0] == (
        "<|system|>\n<|end|>\n<|user|>\nQuestion: What is the capital of France?\nAnswer:<|end|>\n<|assistant|>"
    )
    assert "| starchat_tiny_mc | 0 | acc |" in (out / "report.md").read_text()
    assert "acc[starchat_tiny_mc] = " in capsys.readouterr().out


@needs_lm_eval
def test_unknown_task_is_a_one_line_error(tmp_path, capsys):
    assert (
        main(["eval", "lm-eval", "--model", str(tmp_path), "--tasks", "arc_challange", "--output", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown lm-eval task 'arc_challange'" in err and "arc_challenge" in err


def test_leaderboard_expands_with_its_fewshot_counts():
    from starchat.eval.leaderboard import expand_tasks

    assert expand_tasks(["leaderboard"], None) == [
        ("arc_challenge", 25),
        ("hellaswag", 10),
        ("mmlu", 5),
        ("truthfulqa_mc2", 0),
    ]
    assert expand_tasks(["mmlu", "my_task"], 3) == [("mmlu", 3), ("my_task", 3)]


def test_without_lm_eval_the_error_says_how_to_install(monkeypatch, tmp_path):
    from starchat.eval.leaderboard import LmEvalConfig, run_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(StarchatError, match=r"pip install 'starchat\[lm-eval\]'"):
        run_lm_eval(LmEvalConfig(model=str(tmp_path), tasks=["hellaswag"], output=tmp_path / "o"))


@pytest.mark.slow
@needs_lm_eval
def test_endpoint_through_chat_completions(tiny_engine_for_lm_eval, task_dir, tmp_path):
    """lm-eval's local-chat-completions against a live `starchat serve` app: every document is one request."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
    from serverkit import live_server

    from starchat.server import ServerSettings, create_app

    seen = []
    engine = tiny_engine_for_lm_eval
    original = engine.encode_prompt

    def spy(messages, *a, **kw):
        seen.append(messages)
        return original(messages, *a, **kw)

    engine.encode_prompt = spy
    from starchat.eval.leaderboard import LmEvalConfig, run_lm_eval

    with live_server(create_app(engine, ServerSettings())) as url:
        summary = run_lm_eval(
            LmEvalConfig(
                model=url + "/v1",
                tasks=["starchat_tiny_gen"],
                output=tmp_path / "o",
                include_path=[str(task_dir)],
                apply_chat_template=True,
                endpoint_api="chat",
            )
        )
    assert summary["lm_eval_model"] == "local-chat-completions"
    assert summary["model_args"]["model"] == "tiny-model0"  # from the server's /v1/models
    assert 0.0 <= summary["metrics"]["exact_match[starchat_tiny_gen]"] <= 1.0
    questions = [m[-1]["content"] for m in seen if m and m[-1]["role"] == "user"]
    assert sorted(set(questions)) == sorted(
        {json.loads(line)["question"] for line in (TASK_DIR / "capitals.jsonl").read_text().splitlines()}
    )


@pytest.fixture
def tiny_engine_for_lm_eval(tiny_model_dir):
    from starchat.inference import load_engine

    return load_engine(str(tiny_model_dir), backend="transformers")


def _mc_task(tmp_path, rows=None, dataset_path="json"):
    """starchat_tiny_mc over ``rows`` (written as its JSONL data), or over a hub data set ``dataset_path``."""
    d = tmp_path / "bad_tasks"
    d.mkdir()
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows or []))
    text = (TASK_DIR / "starchat_tiny_mc.yaml.in").read_text().replace("@DATA@", str(data))
    if dataset_path != "json":
        text = text.replace("dataset_path: json", f"dataset_path: {dataset_path}")
        text = text.replace('dataset_kwargs:\n  data_files:\n    test: "' + str(data) + '"\n', "")
    (d / "starchat_tiny_mc.yaml").write_text(text)
    return d


def _one_line_error(argv, capsys) -> str:
    """The error line of a refused run (exit 2); no traceback."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]  # after the data sets' progress bars


@needs_lm_eval
def test_hub_task_whose_data_cannot_be_fetched_offline_is_one_line(tmp_path, capsys):
    tasks = _mc_task(tmp_path, dataset_path="starchat-tests/never-cached")
    err = _one_line_error(
        [
            "eval",
            "lm-eval",
            "--model",
            str(tmp_path),
            "--tasks",
            "starchat_tiny_mc",
            "--include-path",
            str(tasks),
            "--output",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "lm-eval task 'starchat_tiny_mc': its data could not be loaded" in err and "network access" in err


@needs_lm_eval
@pytest.mark.parametrize(
    "row, says",
    [
        (
            {"question": "Capital of France?", "choices": ["Paris", "Rome"], "answer": 7},
            "document 1: answer index 7 is past its 2 choices (0 to 1)",
        ),
        ({"question": "Capital of France?", "choices": [], "answer": 0}, "document 1: no answer choices ([])"),
    ],
)
def test_local_task_with_malformed_data_is_one_line(tmp_path, capsys, row, says):
    good = {"question": "Capital of Spain?", "choices": ["Madrid", "Lisbon"], "answer": 0}
    tasks = _mc_task(tmp_path, rows=[good, row])
    err = _one_line_error(
        [
            "eval",
            "lm-eval",
            "--model",
            str(tmp_path),
            "--tasks",
            "starchat_tiny_mc",
            "--include-path",
            str(tasks),
            "--output",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert f"lm-eval task 'starchat_tiny_mc', {says}" in err


def test_negative_num_fewshot_is_refused(tmp_path, capsys):
    err = _one_line_error(
        [
            "eval",
            "lm-eval",
            "--model",
            str(tmp_path),
            "--tasks",
            "hellaswag",
            "--num-fewshot",
            "-1",
            "--output",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "--num-fewshot -1: give 0 or more" in err
