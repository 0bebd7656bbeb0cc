"""`starchat eval infill`: masked HumanEval problems, middles from the FIM prompt put back and tested, the summary."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from starchat import fim
from starchat.cli import main
from starchat.eval import infill
from starchat.eval.infill import InfillConfig, build_problems, mask_problem, run_infill
from starchat.inference.engine import Engine
from starchat.templates import prepare_tokenizer


def test_every_mask_keeps_the_solution_whole_and_is_deterministic(problems):
    for mode in infill.MODES:
        items, skipped = build_problems(problems, [mode], seed=0)
        assert len(items) + skipped[mode] == len(problems)
        assert len(items) >= (120 if mode == "multi-line" else 164)  # multi-line: one-line solutions skipped
        for it in items:
            p = problems[it.task_id]
            assert it.prefix + it.middle + it.suffix == p["prompt"] + p["canonical_solution"]
            assert it.prefix.startswith(p["prompt"]) and it.middle.strip()
        assert items == build_problems(problems, [mode], seed=0)[0]
        assert items != build_problems(problems, [mode], seed=1)[0]


def test_single_line_masks_exactly_one_non_trivial_line_and_multi_line_two_to_five(problems):
    for p in problems.values():
        one = mask_problem(p, "single-line", seed=0)
        lines = one.middle.splitlines(keepends=True)
        assert len(lines) == 1 and lines[0].endswith("\n") or one.suffix == ""
        assert not infill._trivial(one.middle) and one.prefix.endswith("\n")
        block = mask_problem(p, "multi-line", seed=0)
        if block is not None:
            rows = block.middle.splitlines()
            assert 2 <= len(rows) <= 5 and rows[0].strip() and rows[-1].strip()


class FakeFimEngine:
    """A local engine with a real tokenizer (tiny, plus FIM tokens) that answers each PSM prompt with the masked
    middle (or a wrong one for ``wrong`` task ids); records what it was asked."""

    context_length = 4096
    model_name = "fake"

    def __init__(self, tokenizer, items, wrong=()):
        self.tokenizer, self.wrong, self.params = tokenizer, set(wrong), []
        self.by_prefix = {(it.prefix, it.suffix): it for it in items}

    def fim(self):
        from starchat.inference.fimvocab import from_tokenizer

        return from_tokenizer(str(self.tokenizer.name_or_path), self.tokenizer)

    def encode_plain(self, text):
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []

    def encode_text(self, text):
        return self.tokenizer(text)["input_ids"]

    fim_prompt = Engine.fim_prompt  # the PSM prompt exactly as a real engine builds it

    def generate_batch(self, prompts, params):
        self.params.append(params)
        spec = fim.FimSpec.from_tokenizer(self.tokenizer)
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            assert text.startswith(spec.prefix) and text.endswith(spec.middle)  # PSM, prefix first
            prefix, _, suffix = text[len(spec.prefix) : -len(spec.middle)].partition(spec.suffix)
            it = self.by_prefix[(prefix, suffix)]
            middle = "    return None\n" if it.task_id in self.wrong else it.middle
            out.append(type("C", (), {"text": middle, "finish_reason": "stop"})())
        return out


@pytest.fixture
def fim_tokenizer(base_tokenizer):
    tok = prepare_tokenizer(base_tokenizer)
    fim.add_fim_tokens(tok)
    return tok


def test_middles_are_put_back_and_tested_in_the_sandbox(fim_tokenizer, problems, tmp_path):
    few = dict(list(problems.items())[:3])
    items, _ = build_problems(few, infill.MODES)
    engine = FakeFimEngine(fim_tokenizer, items, wrong={"HumanEval/1"})
    cfg = InfillConfig(output=tmp_path / "run", limit=3, progress=False, workers=2)
    summary = run_infill(engine, cfg, "fake")
    eot = fim_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert all(eot in p.stop_token_ids for p in engine.params)  # generation ends at the FIM stop tokens
    for mode in infill.MODES:
        n = sum(it.mode == mode for it in items)  # multi-line skips a solution of one line
        right = sum(it.mode == mode and it.task_id != "HumanEval/1" for it in items)
        assert summary["per_mode"][mode]["problems"] == n >= 2
        assert summary["per_mode"][mode]["pass@1"] == pytest.approx(right / n) and right < n
        assert summary["metrics"][f"{mode} exact_match"] == pytest.approx(right / n)
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    wrong = [r for r in rows if r["problem"] == "HumanEval/1"]
    assert len(wrong) == 3 and not any(r["passed"] or r["exact"] for r in wrong)
    assert all(r["passed"] and r["exact"] for r in rows if r["problem"] != "HumanEval/1")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["kind"] == "infill" and set(saved["metrics"]) == {
        f"{m} {k}" for m in infill.MODES for k in ("pass@1", "exact_match")
    }
    # a rerun resumes: nothing is generated again
    again = FakeFimEngine(fim_tokenizer, items)
    assert run_infill(again, cfg, "fake")["metrics"] == summary["metrics"] and again.params == []


def test_eval_compare_reads_infill_summaries(fim_tokenizer, problems, tmp_path, capsys):
    few = dict(list(problems.items())[:2])
    items, _ = build_problems(few, ["single-line"])
    for name, wrong in (("a", ()), ("b", {"HumanEval/0"})):
        cfg = InfillConfig(output=tmp_path / name, modes=("single-line",), limit=2, progress=False, workers=2)
        run_infill(FakeFimEngine(fim_tokenizer, items, wrong), cfg, name)
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    table = capsys.readouterr().out
    assert "single-line pass@1" in table and "0.5000 (-0.5)" in table


def test_a_model_without_fim_tokens_is_one_line_naming_it(tiny_model_dir, tmp_path, capsys):
    code = main(
        [
            "eval",
            "infill",
            "--model",
            str(tiny_model_dir),
            "--limit",
            "1",
            "--output",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "Loading weights" not in ln]
    assert code == 2 and len(err) == 1  # no traceback: one line
    assert f"{tiny_model_dir}: this model has no fill-in-the-middle tokens" in err[0]


@pytest.fixture(scope="module")
def tiny_fim_model(tiny_model_dir, tmp_path_factory):
    """The tiny GPT-BigCode with FIM tokens added (rows resized), saved with fim.json as `starchat train` does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from starchat.train.model import resize_embeddings

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    spec = fim.add_fim_tokens(tok)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    resize_embeddings(model, len(tok))
    out = tmp_path_factory.mktemp("tiny-fim")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    spec.save(out)
    return out


def test_a_transformers_model_fills_in_from_its_fim_prompt_end_to_end(tiny_fim_model, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "eval",
                "infill",
                "--model",
                str(tiny_fim_model),
                "--mode",
                "single-line",
                "--limit",
                "2",
                "--max-new-tokens",
                "8",
                "--temperature",
                "0",
                "--output",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "(<fim_prefix> <fim_suffix> <fim_middle>, ends at <|endoftext|>" in printed
    assert "single-line: pass@1 = " in printed
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["program"] == r["program"].replace(r["generated"], r["generated"]) for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)


def test_the_engine_ends_at_extra_stop_token_ids():
    from starchat.inference.engine import Generation
    from starchat.inference.params import SamplingParams

    class E:
        eos_token_ids = [0]
        context_length = 100

        def decode(self, ids):
            return "".join(chr(96 + i) for i in ids)

        def _max_new_tokens(self, n, wanted):
            return wanted

    c = Generation(E(), [1], SamplingParams(stop_token_ids=[9]), tokens=[1, 2, 9, 3]).drain()
    assert (c.text, c.finish_reason, c.token_ids) == ("ab", "stop", [1, 2])
    assert Generation(E(), [1], SamplingParams(), tokens=[1, 2, 9, 3]).drain().text == "abic"


@contextlib.contextmanager
def _fim_server(problems_by_prompt):
    """An OpenAI-style server whose /v1/completions fills in the middle from prompt + suffix; records bodies."""
    seen = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, obj):
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(
                {"object": "list", "data": [{"id": "fim-model", "object": "model", "created": 0, "owned_by": "me"}]}
            )

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            middle = problems_by_prompt.get((body["prompt"], body.get("suffix")), "")
            self._send(
                {
                    "id": "x",
                    "object": "text_completion",
                    "created": 0,
                    "model": "fim-model",
                    "choices": [{"index": 0, "text": middle, "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1", seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_endpoint_gets_prompt_and_suffix_on_v1_completions(problems, tmp_path, capsys):
    items, _ = build_problems(dict(list(problems.items())[:2]), ["multi-line"])
    with _fim_server({(it.prefix, it.suffix): it.middle for it in items}) as (url, seen):
        assert (
            main(
                [
                    "eval",
                    "infill",
                    "--model",
                    url,
                    "--mode",
                    "multi-line",
                    "--limit",
                    "2",
                    "--output",
                    str(tmp_path / "o"),
                    "--no-progress",
                ]
            )
            == 0
        )
    assert "multi-line: pass@1 = 1.0000  exact match = 1.0000" in capsys.readouterr().out
    fills = [b for b in seen if "suffix" in b]
    assert len(fills) == 2 and {(b["prompt"], b["suffix"]) for b in fills} == {(it.prefix, it.suffix) for it in items}
