"""Test helpers for the eval tests: a fake engine with the inference engine's API, and sample files."""

import dataclasses
import json


def write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclasses.dataclass
class FakeParams:
    temperature: float
    max_new_tokens: int
    stop: list
    seed: int | None


@dataclasses.dataclass
class FakeCompletion:
    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 10


class FakeEngine:
    """Answers each HumanEval request like a chat model would: prose around a fenced full solution.
    Text is tokenized one character per token, with a chat format close to StarChat's."""

    def __init__(self, problems, wrong=()):
        self.by_prompt = {p["prompt"].strip("\n"): p for p in problems.values()}
        self.wrong = set(wrong)
        self.calls = []

    def encode_prompt(self, messages, add_generation_prompt=True):
        text = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
        return [ord(c) for c in text + ("<|assistant|>\n" if add_generation_prompt else "")]

    def _problem(self, prompt):
        prefilled = isinstance(prompt[0], int)  # token ids: the answer's start was prefilled
        text = "".join(map(chr, prompt)) if prefilled else prompt[-1]["content"]
        for key, p in self.by_prompt.items():
            if key in text:
                return p, prefilled
        raise AssertionError("unknown prompt")

    def generate_batch(self, prompts, params):
        self.calls.append((prompts, params))
        out = []
        for prompt in prompts:
            p, prefilled = self._problem(prompt)
            body = "    return None\n" if p["task_id"] in self.wrong else p["canonical_solution"]
            if prefilled:  # continue after "```python\n" + prompt
                out.append(FakeCompletion(body.rstrip("\n")))
            else:
                out.append(FakeCompletion(f"Sure! Here it is:\n\n```python\n{p['prompt']}{body}```\n\nHope it helps."))
        return out
