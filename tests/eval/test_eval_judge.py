"""`starchat eval judge` on fixed answers (fake engines): both orders, verdict parsing, retry, resume, intervals."""

import json
import re

import pytest
from eval_fakes import FakeCompletion

from starchat.cli import main
from starchat.errors import StarchatError
from starchat.eval import judge_prompts as jp
from starchat.eval.judge import JudgeConfig, parse_models, run_judge
from starchat.eval.judge_report import bootstrap_ci

ANSWER_RE = re.compile(
    r"\[Start of Assistant A's answer\]\n(.*?)\n\[End of Assistant A's answer\].*?"
    r"\[Start of Assistant B's answer\]\n(.*?)\n\[End of Assistant B's answer\]",
    re.S,
)


class FixedModel:
    """Answers every prompt with ``f"{tag} answer to {id}"``; counts the prompts it was asked."""

    def __init__(self, tag):
        self.tag, self.asked, self.closed = tag, [], 0

    def generate_batch(self, prompts, params):
        self.asked += [p[-1]["content"] for p in prompts]
        return [FakeCompletion(f"{self.tag} answer to: {p[-1]['content'][:40]}") for p in prompts]

    def close(self):
        self.closed += 1


class RuleJudge:
    """A judge whose reply is ``rule(answer_a, answer_b, retry)``; records (A, B, retry) per request."""

    def __init__(self, rule):
        self.rule, self.seen = rule, []

    def generate_batch(self, prompts, params):
        out = []
        for msgs in prompts:
            a, b = ANSWER_RE.search(msgs[1]["content"]).groups()
            retry = msgs[-1]["content"] == jp.RETRY_REQUEST
            self.seen.append((a, b, retry, msgs))
            out.append(FakeCompletion(self.rule(a, b, retry)))
        return out


def prefers_good(a, b, retry):
    if a.startswith("GOOD") == b.startswith("GOOD"):
        return "Both are the same.\n[[C]]"
    return "A is right.\n[[A]]" if a.startswith("GOOD") else "B is right.\n[[B]]"


def _run(tmp_path, judge, limit=5, models=None, **kw):
    models = models or {"good": FixedModel("GOOD"), "bad": FixedModel("BAD")}
    engines = {**models, "the-judge": judge}
    cfg = JudgeConfig(output=tmp_path / "run", limit=limit, bootstrap=200, progress=False, **kw)
    summary = run_judge(cfg, {k: k for k in models}, "the-judge", lambda spec: engines[spec])
    return summary, cfg, models


def test_each_pair_is_judged_in_both_orders_and_a_consistent_judge_wins(tmp_path):
    judge = RuleJudge(prefers_good)
    summary, cfg, _ = _run(tmp_path, judge)
    shown = [(a.split()[0], b.split()[0]) for a, b, _, _ in judge.seen]
    assert sorted(shown) == sorted([("GOOD", "BAD")] * 5 + [("BAD", "GOOD")] * 5)
    m = summary["metrics"]
    assert m["win[good vs bad]"] == 1.0 and m["win_rate[good vs bad]"] == 1.0 and m["win_rate[bad]"] == 0.0
    assert m["win_rate_ci_low[good vs bad]"] == 1.0 and m["position_bias_rate"] == 0.0
    assert m["first_position_share"] == 0.5 and m["unparsed_rate"] == 0.0
    on_disk = json.loads((cfg.output / "summary.json").read_text())
    assert on_disk["kind"] == "judge" and on_disk["metrics"] == m
    report = (cfg.output / "report.md").read_text()
    assert "| good vs bad | 5 | 5 | 0 | 0 | 100.0% (100.0% to 100.0%) | 0/5 |" in report
    assert "> GOOD answer to:" in report  # examples quote the answers


def test_a_judge_that_always_picks_the_first_answer_nets_ties(tmp_path):
    summary, _, _ = _run(tmp_path, RuleJudge(lambda a, b, retry: "The first one.\n[[A]]"))
    m = summary["metrics"]
    assert m["tie[good vs bad]"] == 1.0 and m["win_rate[good vs bad]"] == 0.5
    assert m["position_bias_rate"] == 1.0 and m["first_position_share"] == 1.0
    assert summary["pairs"][0]["flipped"] == 5


def test_three_models_give_three_pairs(tmp_path):
    models = {"good": FixedModel("GOOD"), "bad": FixedModel("BAD"), "good2": FixedModel("GOOD")}
    summary, _, _ = _run(tmp_path, RuleJudge(prefers_good), limit=2, models=models)
    m = summary["metrics"]
    assert [(p["a"], p["b"]) for p in summary["pairs"]] == [("good", "bad"), ("good", "good2"), ("bad", "good2")]
    assert m["win_rate[good vs good2]"] == 0.5 and m["win_rate[bad vs good2]"] == 0.0
    assert m["win_rate[good]"] == 0.75


@pytest.mark.parametrize(
    "text, verdict",
    [
        ("A explains the bug.\n\n[[A]]", "A"),
        ("Final verdict: [[B]]", "B"),
        ("[[C]]", "C"),
        ("It is a draw. [[tie]]", "C"),
        ("Assistant A wins. [[A>B]]", "A"),
        ("My final verdict is [[B>>A]].", "B"),
        ("[[ b ]]", "B"),
        ("Options are [[A]], [[B]] or [[C]].\nB handles the empty list.\n[[B]]", "B"),  # instructions restated
        ("Verdict: [B]", "B"),
        ("Final verdict: Assistant A", "A"),
        ("**Verdict:** **B**", "B"),
        ("Assistant B's answer is clearly better.", "B"),
        ("Both answers are equally good.", "C"),
        ("The winner is a matter of taste.", None),  # "a" is not a label
        ("I cannot decide.", None),
        ("[[A]] or [[B]], hard to say", None),
        ("", None),
    ],
)
def test_verdict_parsing(text, verdict):
    assert jp.parse_verdict(text) == verdict


def test_an_unparseable_verdict_is_retried_once_then_counted(tmp_path):
    def rule(a, b, retry):
        if not retry:
            return "Hmm, both have merit."
        return "[[A]]" if "chunked" in a else "still thinking"  # parses on the retry for write-001 only

    judge = RuleJudge(rule)
    summary, cfg, _ = _run(tmp_path, judge, limit=2)
    first = [s for s in judge.seen if not s[2]]
    retries = [s for s in judge.seen if s[2]]
    assert len(first) == 4 and len(retries) == 4  # each judgment once, each retried once, no more
    msgs = retries[0][3]
    assert msgs[-2] == {"role": "assistant", "content": "Hmm, both have merit."}
    rows = [json.loads(line) for line in (cfg.output / "verdicts.jsonl").read_text().splitlines()]
    assert all(r["retried"] for r in rows)
    parsed = [r for r in rows if r["verdict"]]
    assert len(parsed) == 2 and {r["prompt_id"] for r in parsed} == {"write-001"}
    assert summary["judgments"] == {**summary["judgments"], "total": 4, "unparsed": 2, "retried": 4}
    assert summary["metrics"]["unparsed_rate"] == 0.5


class Interrupt(Exception):
    pass


def test_a_rerun_resumes_from_the_cached_answers_and_verdicts(tmp_path):
    calls = {"n": 0}

    def flaky(a, b, retry):
        calls["n"] += 1
        if calls["n"] > 4:
            raise Interrupt()
        return prefers_good(a, b, retry)

    with pytest.raises(Interrupt):
        _run(tmp_path, RuleJudge(flaky), limit=6, batch_size=2)
    out = tmp_path / "run"
    assert len((out / "answers.jsonl").read_text().splitlines()) == 12
    assert len((out / "verdicts.jsonl").read_text().splitlines()) == 4
    with (out / "verdicts.jsonl").open("a") as f:
        f.write('{"prompt_id": "write-0')  # a line cut by the interruption
    judge = RuleJudge(prefers_good)
    summary, _, models = _run(tmp_path, judge, limit=6, batch_size=2)
    assert models["good"].asked == [] and models["bad"].asked == []  # answers came from the cache
    assert len(judge.seen) == 8  # only the 12 - 4 judgments not made yet
    assert summary["pairs"][0]["prompts"] == 6 and summary["metrics"]["win_rate[good vs bad]"] == 1.0
    assert len((out / "verdicts.jsonl").read_text().splitlines()) == 12


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    _run(tmp_path, RuleJudge(prefers_good), limit=1)
    with pytest.raises(StarchatError, match=r"settings \(temperature was 0.2, now 0.7\): use another --output"):
        _run(tmp_path, RuleJudge(prefers_good), limit=1, temperature=0.7)


def test_bootstrap_interval_sanity():
    outcomes = ["win"] * 60 + ["loss"] * 40
    ci = bootstrap_ci(outcomes, n_boot=2000, seed=0)
    low, high = ci["win_rate"]
    assert low < 0.6 < high
    assert 0.14 < high - low < 0.25  # ~ 2 * 1.96 * sqrt(0.24 / 100) = 0.19
    assert ci == bootstrap_ci(outcomes, n_boot=2000, seed=0)  # seeded
    assert bootstrap_ci(["win"] * 10, 500, 0)["win_rate"] == (1.0, 1.0)
    ties = bootstrap_ci(["tie"] * 20 + ["win"] * 20, 1000, 1)
    assert ties["tie"][0] < 0.5 < ties["tie"][1] and ties["loss"] == (0.0, 0.0)


def test_the_shipped_prompt_set():
    prompts = jp.load_prompts()
    assert len(prompts) >= 80 and len({p["id"] for p in prompts}) == len(prompts)
    assert {p["category"] for p in prompts} == {"write", "explain", "debug", "refactor", "test"}
    langs = {p["language"] for p in prompts}
    assert "python" in langs and len(langs) >= 5


def test_a_bad_prompts_file_names_file_and_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\n\n{"prompt": "x"\n')
    with pytest.raises(StarchatError, match=r"p.jsonl:3: not valid JSON"):
        jp.load_prompts(str(f))
    f.write_text('{"id": 1, "prompt": "a"}\n{"id": 2, "text": "b"}\n')
    with pytest.raises(StarchatError, match=r"p.jsonl:2: field 'prompt' is missing"):
        jp.load_prompts(str(f))
    f.write_text('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n')
    with pytest.raises(StarchatError, match=r"p.jsonl:2: id 'x' was already used on line 1"):
        jp.load_prompts(str(f))
    f.write_text('{"question_id": 81, "category": "coding", "turns": ["Write a parser", "Now test it"]}\n')
    assert jp.load_prompts(str(f)) == [{"id": "81", "prompt": "Write a parser", "category": "coding", "language": ""}]


def test_a_prompt_with_a_lone_surrogate_names_file_and_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\n{"prompt": "broken \\ud800 escape"}\n')  # valid JSON, but not text
    with pytest.raises(
        StarchatError,
        match=r"p.jsonl:2: field 'prompt' holds a lone surrogate \(U\+D800 at "
        r"character 7\)",
    ):
        jp.load_prompts(str(f))


def test_a_prompts_file_that_is_not_utf8_names_file_and_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(StarchatError, match=r"p.jsonl:2: not UTF-8 text"):
        jp.load_prompts(str(f))


@pytest.mark.parametrize(
    "flag, value, says",
    [
        ("--limit", "0", "--limit 0: give at least 1 prompt"),
        ("--bootstrap", "-5", "--bootstrap -5: give a number of resamples"),
    ],
)
def test_cli_refuses_limit_zero_and_negative_bootstrap(tmp_path, monkeypatch, capsys, flag, value, says):
    engines = {"a": FixedModel("GOOD"), "b": FixedModel("BAD"), "j": RuleJudge(prefers_good)}
    monkeypatch.setattr("starchat.inference.load_engine", lambda model=None, backend="auto": engines[model])
    assert (
        main(
            [
                "eval",
                "judge",
                "--model",
                "a",
                "--model",
                "b",
                "--judge",
                "j",
                flag,
                value,
                "--output",
                str(tmp_path / "cli"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err
    assert engines["a"].asked == [] and not (tmp_path / "cli").exists()  # refused before any work


def test_model_labels():
    assert parse_models(["default", "/runs/nano-cpu/"]) == {"default": "default", "nano-cpu": "/runs/nano-cpu/"}
    assert list(parse_models(["http://127.0.0.1:8000/v1", "big=https://api.example.com/v1"])) == [
        "127.0.0.1-8000",
        "big",
    ]
    with pytest.raises(StarchatError, match="both called 'model'"):
        parse_models(["/a/model", "/b/model"])
    with pytest.raises(StarchatError, match="at least two"):
        parse_models(["default"])


class CountingJudge(RuleJudge):
    """A judge with a small context that counts one token per character."""

    context_length = 2000

    def prompt_ids(self, msgs):
        return list(range(sum(len(m["content"]) for m in msgs)))


def test_answers_are_cut_to_fit_the_judges_context(tmp_path):
    long = {"good": FixedModel("GOOD " + "x" * 3000), "bad": FixedModel("BAD " + "y" * 3000)}
    judge = CountingJudge(prefers_good)
    _run(tmp_path, judge, limit=1, models=long, judge_max_new_tokens=256)
    for _, _, _, msgs in judge.seen:
        assert len(judge.prompt_ids(msgs)) <= 2000 - 256
        assert "[... cut to fit the judge's context]" in msgs[1]["content"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "verdicts.jsonl").read_text().splitlines()]
    assert all(r["answers_cut"] and r["winner"] == "good" for r in rows)


def test_cli_prints_the_pairs(tmp_path, monkeypatch, capsys):
    engines = {"a": FixedModel("GOOD"), "b": FixedModel("BAD"), "j": RuleJudge(prefers_good)}
    monkeypatch.setattr("starchat.inference.load_engine", lambda model=None, backend="auto": engines[model])
    out = tmp_path / "cli"
    assert (
        main(
            [
                "eval",
                "judge",
                "--model",
                "a",
                "--model",
                "b",
                "--judge",
                "j",
                "--limit",
                "3",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "a vs b: 3 wins, 0 ties, 0 losses; win rate 1.000 [1.000, 1.000] over 3 prompts" in printed
    assert "position-bias rate: 0.000; unparsed verdicts: 0/6" in printed
    assert {p.name for p in out.iterdir()} >= {"answers.jsonl", "verdicts.jsonl", "summary.json", "report.md"}


@pytest.mark.slow
def test_cli_with_real_engines_and_a_judge_too_small(tiny_model_dir, tmp_path, capsys):
    """Real engines through load_engine: the tiny model answers; as a judge its 512-token context cannot
    hold the judge's request, which is one clear error, and the answers made so far are kept."""
    out = tmp_path / "cli"
    m = str(tiny_model_dir)
    argv = [
        "eval",
        "judge",
        "--model",
        f"one={m}",
        "--model",
        f"two={m}",
        "--judge",
        m,
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--judge-max-new-tokens",
        "8",
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not load progress
    assert len(errors) == 1 and errors[0].startswith("starchat eval: error: the judge's request is ")
    assert "context is 512 tokens" in errors[0] and "longer context" in errors[0]
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["model"] for r in rows} == {"one", "two"}


class LocalJudge(RuleJudge):
    """A judge with a chat format (one token per character), so its retry can be prefilled."""

    def encode_prompt(self, messages, add_generation_prompt=True):
        text = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
        return [ord(c) for c in text + ("<|assistant|>\n" if add_generation_prompt else "")]

    def generate_batch(self, prompts, params):
        if prompts and isinstance(prompts[0][0], int):  # the prefilled retries
            texts = ["".join(map(chr, p)) for p in prompts]
            self.prefilled = texts
            return [FakeCompletion("B]] because it is shorter") for _ in texts]
        return super().generate_batch(prompts, params)


def test_a_local_judges_retry_is_prefilled_with_the_verdicts_start(tmp_path):
    judge = LocalJudge(lambda a, b, retry: "They look alike to me.")
    summary, cfg, _ = _run(tmp_path, judge, limit=1)
    assert len(judge.prefilled) == 2
    for text in judge.prefilled:  # the follow-up turn, then the answer's start in the assistant turn
        assert text.endswith(f"<|user|>\n{jp.RETRY_REQUEST}<|end|>\n<|assistant|>\n{jp.RETRY_PREFILL}")
    rows = [json.loads(line) for line in (cfg.output / "verdicts.jsonl").read_text().splitlines()]
    assert [r["retry_raw"] for r in rows] == ["My final verdict: [[B]] because it is shorter"] * 2
    assert {r["verdict"] for r in rows} == {"B"} and summary["metrics"]["position_bias_rate"] == 1.0


def test_report_closes_a_code_fence_left_open_in_an_answer(tmp_path):
    models = {"good": FixedModel("GOOD\n```python\nprint(1)"), "bad": FixedModel("BAD")}
    _, cfg, _ = _run(tmp_path, RuleJudge(prefers_good), limit=1, models=models)
    report = (cfg.output / "report.md").read_text()
    quoted = report.split("**good**:")[1].split("**bad**:")[0]
    assert quoted.count("```") == 2 and quoted.strip().endswith("> ```")
