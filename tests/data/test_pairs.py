"""`data pairs`: crafted replies through a scripted engine: which reply wins, ties, resume, and bad input."""

import dataclasses
import json
import multiprocessing
import os
import signal

import datasets
import pytest

from starchat.errors import StarchatError
from starchat.eval import scoring
from starchat.pairs import mine as pairs_mod
from starchat.pairs.mine import PairsConfig, build_pairs

GOOD = "Here:\n\n```python\ndef add(a, b):\n    return a + b\n```"
WRONG = "Here:\n\n```python\ndef add(a, b):\n    return a - b\n```"
BROKEN = "Here:\n\n```python\ndef add(a, b)\n    return a + b\n```"
SHELL = "```python\nimport subprocess\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n```"
SAFE = "```python\nimport shlex\n\ndef run(cmd):\n    return shlex.split(cmd)\n```"
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


@dataclasses.dataclass
class Params:
    temperature: float
    max_new_tokens: int
    stop: list
    seed: int


@dataclasses.dataclass
class Done:
    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 5


class ScriptedEngine:
    """Reply j (the call's seed) to a prompt is ``script[last user text][j]``; counts what it generated."""

    context_length = 4096

    def __init__(self, script, fail_after=None):
        self.script, self.fail_after, self.generated = script, fail_after, 0

    def encode_prompt(self, messages, add_generation_prompt=True):
        return [ord(c) for m in messages for c in m["content"]]

    def generate_batch(self, prompts, params):
        if self.fail_after is not None and self.generated >= self.fail_after:
            raise KeyboardInterrupt  # the run is interrupted mid-way
        self.generated += len(prompts)
        out = []
        for p in prompts:
            reply = self.script[p[-1]["content"]][params.seed]
            out.append(Done(*reply) if isinstance(reply, tuple) else Done(reply))
        return out


def _prompts(tmp_path, rows):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


FILLER = {"Filler?": ["Fine.", ("Fine", "length")]}  # always a pair: the output needs a train and a test pair


def _run(tmp_path, rows, script, engine=None, **kw):
    rows, script = rows + [{"id": "filler", "prompt": "Filler?"}], {**script, **FILLER}
    cfg = PairsConfig(
        model="scripted",
        prompts=_prompts(tmp_path, rows),
        output=str(tmp_path / "pairs"),
        progress=False,
        **{"k": 2, **kw},
    )
    stats = build_pairs(cfg, engine=engine or ScriptedEngine(script), make_params=Params)
    dd = datasets.load_from_disk(str(tmp_path / "pairs"))
    out = {r["source"]: r for s in ("train", "test") for r in dd[s]}
    assert out.pop("filler")["chosen"][0]["content"] == "Fine."
    return stats, out


def test_a_passing_reply_beats_a_non_compiling_one(tmp_path):
    rows = [
        {"id": "add", "messages": [{"role": "user", "content": "Write add(a, b)."}], "entry_point": "add", "test": TEST}
    ]
    stats, out = _run(tmp_path, rows, {"Write add(a, b).": [BROKEN, GOOD]})
    assert out["add"]["chosen"][0]["content"] == GOOD and out["add"]["rejected"][0]["content"] == BROKEN
    assert out["add"]["chosen_score"] == 4.0 and out["add"]["rejected_score"] == -3.0
    assert stats["criteria"]["tests_passed"] == 1 and stats["criteria"]["syntax"] == 1
    assert stats["splits"] == {"train": 1, "test": 1}


def test_tests_decide_between_two_compiling_replies(tmp_path):
    rows = [
        {"id": "add", "messages": [{"role": "user", "content": "Write add(a, b)."}], "entry_point": "add", "test": TEST}
    ]
    _, out = _run(tmp_path, rows, {"Write add(a, b).": [GOOD, WRONG]})
    assert out["add"]["chosen"][0]["content"] == GOOD


def test_doctests_in_the_prompt_are_the_tests(tmp_path):
    prompt = "Write `def add(a, b)`:\n\n>>> add(2, 3)\n5"
    stats, out = _run(tmp_path, [{"id": "d", "prompt": prompt}], {prompt: [WRONG, GOOD]})
    assert out["d"]["chosen"][0]["content"] == GOOD
    assert stats["criteria"]["tests_passed"] == 1 and stats["criteria"]["tests_failed"] == 1


def test_a_bandit_high_finding_loses(tmp_path):
    stats, out = _run(tmp_path, [{"id": "sh", "prompt": "Run a command."}], {"Run a command.": [SHELL, SAFE]})
    assert out["sh"]["chosen"][0]["content"] == SAFE and out["sh"]["rejected"][0]["content"] == SHELL
    assert stats["criteria"]["high"] == 1


def test_ties_and_cut_off_replies(tmp_path):
    rows = [{"id": "tie", "prompt": "Explain lists."}, {"id": "cut", "prompt": "Explain tuples."}]
    script = {
        "Explain lists.": ["Lists are mutable.", "A list can change."],
        "Explain tuples.": [("Tuples are", "length"), ("Tuples are immutable.", "stop")],
    }
    stats, out = _run(tmp_path, rows, script)
    assert "tie" not in out and stats["no_pair"] == {"tie": 1}
    assert out["cut"]["chosen"][0]["content"] == "Tuples are immutable."
    assert stats["prompts_with_pair"] == 2 and stats["criteria"]["cut_off"] == 2
    assert stats["scoring_rule"].startswith("score = +4*passed -3*syntax")


def test_weights_are_configurable(tmp_path):
    script = {"Explain tuples.": [("See https://docs.python.org", "length"), ("Tuples are immutable.", "stop")]}
    rows = [{"id": "cut", "prompt": "Explain tuples."}]
    stats, out = _run(tmp_path, rows, script, weights="url=0,cut_off=-0.5")
    assert out["cut"]["rejected_score"] == -0.5 and stats["weights"]["url"] == 0
    _, out = _run(tmp_path / "b", rows, script, weights="url=2,cut_off=-1")
    assert out["cut"]["chosen"][0]["content"].startswith("See")  # a link now counts for the reply


def test_too_few_pairs_is_an_error_that_keeps_the_replies(tmp_path):
    cfg = PairsConfig(
        model="m",
        prompts=_prompts(tmp_path, [{"prompt": "Explain lists."}]),
        output=str(tmp_path / "o"),
        progress=False,
        k=2,
    )
    with pytest.raises(StarchatError, match="only 0 of 1 prompts gave a pair .no pair: {'tie': 1}"):
        build_pairs(cfg, engine=ScriptedEngine({"Explain lists.": ["Yes.", "No."]}), make_params=Params)
    assert (tmp_path / "o.partial" / "stats.json").exists() and not (tmp_path / "o").exists()


def test_resume_generates_only_the_missing_replies(tmp_path):
    rows = [{"id": f"p{i}", "prompt": f"Question {i}?"} for i in range(4)]
    script = {**FILLER, **{f"Question {i}?": [f"Short answer {i}.", (f"Long answer {i}", "length")] for i in range(4)}}
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, rows, script, engine=ScriptedEngine(script, fail_after=2), batch_size=2)
    log = tmp_path / "pairs.partial" / "samples.jsonl"
    assert len(log.read_text().splitlines()) == 2 and not (tmp_path / "pairs").exists()
    engine = ScriptedEngine(script)
    stats, out = _run(tmp_path, rows, script, engine=engine, batch_size=2)
    assert engine.generated == 8  # 10 replies (with the filler's), 2 of them from the first run
    assert len(out) == 4 and stats["criteria"]["replies"] == 10
    assert not (tmp_path / "pairs.partial").exists()
    assert len((tmp_path / "pairs" / "replies.jsonl").read_text().splitlines()) == 10


def test_overlapped_and_sequential_scoring_agree(tmp_path):
    rows = [
        {"id": f"p{i}", "messages": [{"role": "user", "content": f"Q{i}"}], "entry_point": "add", "test": TEST}
        for i in range(5)
    ]
    script = {f"Q{i}": [GOOD, BROKEN if i % 2 else WRONG] for i in range(5)}
    a, out_a = _run(tmp_path / "a", rows, script, batch_size=2, overlap=True)
    b, out_b = _run(tmp_path / "b", rows, script, batch_size=2, overlap=False)
    assert a["criteria"] == b["criteria"] and sorted(out_a) == sorted(out_b) and len(out_a) == 5
    assert a["config"]["overlap"] and not b["config"]["overlap"]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(k=1), "at least 2 replies"),
        (dict(temperature=0.0), "must be > 0"),
        (dict(weights="speed=1"), "unknown criterion 'speed'"),
        (
            dict(weights="passed=inf"),
            "passed=inf: each weight must be a finite number",
        ),  # inf - inf: every prompt was a tie
        (dict(weights="url=-inf,syntax=nan"), "syntax=nan, url=-inf: each weight must be"),
    ],
)
def test_bad_settings_fail_before_generation(tmp_path, change, message):
    engine = ScriptedEngine({})
    cfg = PairsConfig(
        model="m", prompts=_prompts(tmp_path, [{"prompt": "q"}]), output=str(tmp_path / "o"), progress=False, **change
    )
    with pytest.raises(StarchatError, match=message):
        build_pairs(cfg, engine=engine, make_params=Params)
    assert engine.generated == 0


@pytest.mark.parametrize(
    "row, message",
    [
        ({"text": "q"}, "needs 'prompt'"),
        ({"prompt": [{"role": "user", "content": "q"}, {"role": "user", "content": "r"}]}, "prompt"),
        ({"prompt": "   "}, "non-empty user turn"),
        ({"prompt": "q", "entry_point": 3}, "field 'entry_point' must be str"),
        ({"id": "a", "prompt": "other"}, "id 'a' is used by two different prompts"),
    ],
)
def test_bad_prompt_rows_name_their_line(tmp_path, row, message):
    engine = ScriptedEngine({})
    src = _prompts(tmp_path, [{"id": "a", "prompt": "fine"}, row])
    with pytest.raises(StarchatError, match=message) as e:
        build_pairs(
            PairsConfig(model="m", prompts=src, output=str(tmp_path / "o"), progress=False),
            engine=engine,
            make_params=Params,
        )
    assert (f"{src}:2" in str(e.value) or "id 'a'" in str(e.value)) and engine.generated == 0


def test_model_without_chat_template_fails_before_generation(tmp_path, base_tokenizer_dir):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(base_tokenizer_dir)
    model_dir = tmp_path / "plain"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
        model_dir
    )
    tok.save_pretrained(model_dir)
    cfg = PairsConfig(model=str(model_dir), prompts=_prompts(tmp_path, [{"prompt": "q"}]), output=str(tmp_path / "o"))
    with pytest.raises(StarchatError, match="no chat template"):
        build_pairs(cfg)
    assert not (tmp_path / "o.partial").exists()


def test_cli_pairs_prints_the_table_and_the_rule(tmp_path, monkeypatch, capsys):
    import starchat.inference
    from starchat.cli import main

    script = {**FILLER, "Explain tuples.": [("Tuples are", "length"), ("Tuples are immutable.", "stop")]}
    monkeypatch.setattr(starchat.inference, "load_engine", lambda **kw: ScriptedEngine(script))
    src = _prompts(tmp_path, [{"id": "t", "prompt": "Explain tuples."}, {"id": "f", "prompt": "Filler?"}])
    monkeypatch.setattr("starchat.eval.prompting.sampling_params", Params)
    rc = main(
        [
            "data",
            "pairs",
            "--model",
            "m",
            "--prompts",
            src,
            "--output",
            str(tmp_path / "o"),
            "-k",
            "2",
            "--no-progress",
            "--no-overlap",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "prompts with a pair" in out and "score = +4*passed" in out and "train 1, test 1" in out


def test_cli_k_below_2_is_one_line_and_exit_2(tmp_path, capsys):
    from starchat.cli import main

    rc = main(["data", "pairs", "--prompts", "stdlib-pairs", "--output", str(tmp_path / "o"), "-k", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "starchat data: error: -k 1: need at least 2 replies per prompt to make a pair"


def test_scorer_ranks_by_the_documented_rule():
    flags = scoring.review_flags(SHELL, "stop")
    assert flags["high"] == 1 and scoring.score({**flags, "passed": True}) == 4 - 3 - 0.5  # high + low (B404)
    assert pairs_mod.scoring is scoring


def test_scoring_overlaps_generation_only_where_it_is_not_on_this_cpu(tmp_path):
    """By default the scoring process runs beside an endpoint's or a GPU's generation, not beside a CPU engine."""
    rows = [{"id": f"p{i}", "prompt": f"Question {i}?"} for i in range(2)]
    script = {f"Question {i}?": [f"Short answer {i}.", (f"Long answer {i}", "length")] for i in range(2)}
    remote = ScriptedEngine({**script, **FILLER})
    remote.on_local_cpu = False
    here, _ = _run(tmp_path / "here", rows, script)
    there, out = _run(tmp_path / "there", rows, script, engine=remote)
    assert not here["generation"]["overlap"] and there["generation"]["overlap"]
    assert here["criteria"] == there["criteria"] and len(out) == 2


QUESTIONS = [{"id": f"p{i}", "prompt": f"Question {i}?"} for i in range(2)]
ANSWERS = {**FILLER, **{f"Question {i}?": [f"Short answer {i}.", (f"Long answer {i}", "length")] for i in range(2)}}


def _interrupted(tmp_path):
    """A run stopped after its first batch: OUTPUT.partial holds a log of 2 replies (lines 1 and 2)."""
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, QUESTIONS, ANSWERS, engine=ScriptedEngine(ANSWERS, fail_after=2), batch_size=2)
    log = tmp_path / "pairs.partial" / "samples.jsonl"
    return log, [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda row: json.dumps({**row, "flags": "passed"}).encode(), "field 'flags' must be an object"),
        (
            lambda row: json.dumps({**row, "flags": {**row["flags"], "high": "many"}}).encode(),
            "field 'flags.high' must be a number",
        ),
        (lambda row: json.dumps({**row, "reply": ["Short answer."]}).encode(), "field 'reply' must be a string"),
        (lambda row: json.dumps({**row, "sample_index": "0"}).encode(), "field 'sample_index' must be an integer"),
        (lambda row: b"\x93\xfe\x00garbage\xff", "not UTF-8 text"),
        (lambda row: b"[1, 2]", "a list, not a JSON object"),
    ],
    ids=["flags-not-object", "flag-not-number", "reply-not-string", "index-not-int", "random-bytes", "not-object"],
)
def test_a_damaged_resume_log_line_is_file_line_and_how_to_recover(tmp_path, damage, message):
    log, rows = _interrupted(tmp_path)
    log.write_bytes(json.dumps(rows[0]).encode() + b"\n" + damage(rows[1]) + b"\n")
    engine = ScriptedEngine(ANSWERS)
    with pytest.raises(StarchatError, match=message) as e:
        _run(tmp_path, QUESTIONS, ANSWERS, engine=engine, batch_size=2)
    assert str(e.value).startswith(f"{log}:2: ") and "delete that line" in str(e.value)
    assert engine.generated == 0


def test_a_reply_logged_twice_is_refused(tmp_path):
    log, rows = _interrupted(tmp_path)
    log.write_text(log.read_text() + json.dumps({**rows[0], "reply": "Another answer."}) + "\n")
    with pytest.raises(StarchatError, match=f"{log}:3: reply 0 of prompt 'p0' is logged twice .also on line 1."):
        _run(tmp_path, QUESTIONS, ANSWERS, batch_size=2)


def test_a_line_cut_by_an_interruption_is_sampled_again(tmp_path):
    log, rows = _interrupted(tmp_path)
    log.write_text(log.read_text() + json.dumps(rows[0])[:20])  # no newline: the write was cut
    engine = ScriptedEngine(ANSWERS)
    stats, out = _run(tmp_path, QUESTIONS, ANSWERS, engine=engine, batch_size=2)
    assert engine.generated == 4 and len(out) == 2 and stats["criteria"]["replies"] == 6


class KillsTheScorer(ScriptedEngine):
    """Kills the scoring process (as the OOM killer would) when the third batch is generated."""

    def generate_batch(self, prompts, params):
        if self.generated == 4:
            for child in multiprocessing.active_children():  # the scoring pool's process, started by this run
                os.kill(child.pid, signal.SIGKILL)
        return super().generate_batch(prompts, params)


def test_a_killed_scoring_process_ends_the_run_with_one_line_and_a_rerun_resumes(tmp_path):
    with pytest.raises(StarchatError, match=r"the scoring process died .* rerun the same command to resume"):
        _run(tmp_path, QUESTIONS, ANSWERS, engine=KillsTheScorer(ANSWERS), batch_size=2, overlap=True)
    engine = ScriptedEngine(ANSWERS)
    stats, out = _run(tmp_path, QUESTIONS, ANSWERS, engine=engine, batch_size=2, overlap=True)
    assert 2 <= engine.generated <= 4  # the first batch was logged before the kill, so it is not sampled again
    assert len(out) == 2 and stats["criteria"]["replies"] == 6


def test_a_resume_with_other_settings_names_what_differs(tmp_path):
    from starchat.pairs.reply_log import ReplyLog

    ReplyLog(tmp_path / "w", {"k": 4, "seed": 0}).close()
    with pytest.raises(StarchatError, match=r"holds a run with other settings \(k was 4, now 5\): use another"):
        ReplyLog(tmp_path / "w", {"k": 5, "seed": 0})
