"""`data pairs --model http://HOST/v1`: replies from an OpenAI-compatible endpoint (a local fake server)."""

import json

import datasets
from hostile import Hostile, hostile_server

from starchat.cli import main


def _reply(req: dict) -> dict:
    """Seed 0: a finished answer; other seeds: one cut short, so every prompt gives a pair."""
    done = req.get("seed", 0) % 2 == 0
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "hostile",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Fine." if done else "Fine"},
                "finish_reason": "stop" if done else "length",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def test_pairs_from_an_endpoint(tmp_path, capsys):
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": f"Question {i}?"}) + "\n" for i in ("a", "b")))
    server = Hostile(reply=_reply)
    with hostile_server(server) as url:
        rc = main(
            [
                "data",
                "pairs",
                "--model",
                url,
                "--prompts",
                str(src),
                "--output",
                str(tmp_path / "o"),
                "-k",
                "2",
                "--no-progress",
            ]
        )
    assert rc == 0, capsys.readouterr().err
    rows = datasets.load_from_disk(str(tmp_path / "o"))
    chosen = [r["chosen"][-1]["content"] for split in rows.values() for r in split]
    asked = sorted((r["messages"][-1]["content"], r["seed"]) for r in server.requests if r.get("max_tokens") != 1)
    assert chosen == ["Fine.", "Fine."] and asked == [
        ("Question a?", 0),
        ("Question a?", 1),
        ("Question b?", 0),
        ("Question b?", 1),
    ]  # k=2 replies each (knob probes aside)


def _args(url, tmp_path, *extra):
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"id": i, "prompt": f"Question {i}?"}) + "\n" for i in ("a", "b")))
    return ["data", "pairs", "--model", url, "--prompts", str(src), "--output", str(tmp_path / "o"), "-k", "2", *extra]


def test_pairs_name_the_served_model_and_never_write_the_key(tmp_path, capsys):
    server = Hostile(reply=_reply)
    with hostile_server(server) as url:
        rc = main(_args(url, tmp_path, "--served-model", "my-coder", "--api-key", "sk-secret-1", "--no-progress"))
    assert rc == 0, capsys.readouterr().err
    assert {r["model"] for r in server.requests} == {"my-coder"}
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert "api_key" not in stats["config"] and stats["model"] == "my-coder"
    assert not any("sk-secret-1" in p.read_text(errors="replace") for p in (tmp_path / "o").rglob("*") if p.is_file())


def test_pairs_cut_off_a_trickling_endpoint_at_the_request_timeout(tmp_path, capsys):
    import time

    with hostile_server(Hostile(mode="trickle-body", pace=0.2)) as url:
        t0 = time.monotonic()
        rc = main(_args(url, tmp_path, "--request-timeout", "1", "--no-progress"))
        took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert rc != 0 and url.split("/v1")[0] in err and "Traceback" not in err
    assert took < 30  # attempts of 1 s each, not the 600 s default


def test_endpoint_flags_beside_a_local_model_are_one_line(tmp_path, capsys):
    rc = main(_args("some/local-model", tmp_path, "--served-model", "x"))
    assert rc != 0 and "--served-model applies to an endpoint" in capsys.readouterr().err
