"""Extracting code from chat replies and building programs the tests can run."""

import pytest

from starchat.errors import StarchatError
from starchat.eval.programs import chat_program, extract_code, read_samples
from starchat.eval.prompting import prefill_ids


def test_extracts_the_block_that_defines_the_function():
    reply = "First a helper:\n```python\nimport math\n```\nThen:\n```python\ndef f(x):\n    return x\n```\nDone."
    assert extract_code(reply, "f") == "def f(x):\n    return x\n"


def test_unfenced_reply_and_unterminated_fence():
    assert extract_code("def f():\n    return 1\n", "f") == "def f():\n    return 1"
    assert extract_code("```python\ndef f():\n    return 1\n", "f") == "def f():\n    return 1\n"


def test_full_function_keeps_prompt_imports_and_helpers(problems):
    p = problems["HumanEval/32"]  # find_zero's tests call the prompt's poly() and use math
    reply = f"```python\ndef find_zero(xs: list):\n{p['canonical_solution']}```"
    program = chat_program(p, reply)
    assert program.startswith(p["prompt"].rstrip()) and "def poly" in program
    scope = {}
    exec(program, scope)
    assert abs(scope["poly"]([-6, 11, -6, 1], scope["find_zero"]([-6, 11, -6, 1]))) < 1e-4


def test_body_only_reply_continues_the_prompt(problems):
    p = problems["HumanEval/0"]
    body = (
        "for i, a in enumerate(numbers):\n    for b in numbers[i + 1:]:\n        if abs(a - b) < threshold:\n"
        "            return True\nreturn False"
    )
    scope = {}
    exec(chat_program(p, f"```python\n{body}\n```"), scope)
    assert scope["has_close_elements"]([1.0, 1.05], 0.1) is True


def test_prefill_ids_are_the_assistant_text_alone(problems):
    from eval_fakes import FakeEngine

    engine = FakeEngine(problems)
    msgs = [{"role": "user", "content": "hi"}]
    assert "".join(map(chr, prefill_ids(engine, msgs, "```python\ndef f("))) == "```python\ndef f("


def test_bad_samples_file_names_the_line(tmp_path, problems):
    path = tmp_path / "s.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": "HumanEval/0"}\n')
    with pytest.raises(StarchatError, match=r"s.jsonl:2: .*completion"):
        list(read_samples(path, problems))
    path.write_text('{"task_id": "Nope/1", "completion": ""}\n')
    with pytest.raises(StarchatError, match=r"s.jsonl:1: unknown task_id"):
        list(read_samples(path, problems))
