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
