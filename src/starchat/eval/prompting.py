"""Prompting a chat model for HumanEval: the request in its own chat format, and an optional prefilled answer start."""

from __future__ import annotations

from typing import Any

from starchat.errors import StarchatError

INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, including its signature "
    "and the imports it needs, in a single ```python code block.\n\n```python\n{prompt}\n```"
)


def messages_for(problem: dict[str, Any], system: str | None = None) -> list[dict[str, str]]:
    """The chat request for one problem."""
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": INSTRUCTION.format(prompt=problem["prompt"].strip("\n"))})
    return msgs


def prefill_text(problem: dict[str, Any]) -> str:
    """The start of the answer we write for the model: an open code fence and the prompt itself,
    so the model only has to continue the function body."""
    return "```python\n" + problem["prompt"]


def prefill_ids(engine, messages: list[dict[str, str]], text: str) -> list[int]:
    """Token ids of ``text`` as the start of the assistant's turn, found with the chat template alone:
    the conversation with an assistant turn holding ``text``, minus the prompt before it and minus the
    closing tokens the template puts after any reply (measured with an empty reply)."""
    base = engine.encode_prompt(messages, add_generation_prompt=True)
    full = engine.encode_prompt(messages + [{"role": "assistant", "content": text}], add_generation_prompt=False)
    empty = engine.encode_prompt(messages + [{"role": "assistant", "content": ""}], add_generation_prompt=False)
    tail = empty[len(base) :] if empty[: len(base)] == base else None
    if full[: len(base)] != base or tail is None or (tail and full[-len(tail) :] != tail):
        raise StarchatError(
            "this model's chat template does not render an assistant turn as prompt + reply + "
            "closing tokens, so the answer cannot be prefilled: run without --prefill"
        )
    return full[len(base) : len(full) - len(tail)]


def request_for(engine, problem: dict[str, Any], prefill: bool, system: str | None = None):
    """What to hand ``engine.generate_batch`` for one problem: messages, or token ids when prefilling."""
    msgs = messages_for(problem, system)
    if not prefill:
        return msgs
    return engine.encode_prompt(msgs, add_generation_prompt=True) + prefill_ids(engine, msgs, prefill_text(problem))


def sampling_params(temperature: float, max_new_tokens: int, stop: list[str], seed: int | None):
    """The engine's SamplingParams for code: no repetition penalty (code repeats itself on purpose)."""
    from starchat.inference import SamplingParams

    kwargs = dict(temperature=temperature, max_new_tokens=max_new_tokens, stop=stop, seed=seed)
    try:
        return SamplingParams(**kwargs, repetition_penalty=1.0)
    except TypeError:  # an engine without that knob
        return SamplingParams(**kwargs)
