"""Writes the bundled sample datasets under tests/data/samples, one file per supported format.

The dialogues are our own. A few are planted on purpose so that every filter has work to do:
a refusal (for --uncensored), an exact and a near duplicate, and one that quotes a HumanEval
prompt (for --decontaminate). Run: python tests/data/make_samples.py
"""

import json
from pathlib import Path

OUT = Path(__file__).parent / "samples"
PREF_OUT = Path(__file__).parent / "samples-preference"  # not in samples/: dialogue tests read that whole folder

QA = [
    (
        "How do I sort a list of dictionaries by a key in Python?",
        'Use `sorted` with a `key` function:\n\n```python\npeople = [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]\nby_age = sorted(people, key=lambda p: p["age"])\n```\n\n`operator.itemgetter("age")` does the same and is a little faster.',
    ),
    (
        "What is the difference between a list and a tuple?",
        "A list is mutable: you can append, remove and change items. A tuple is immutable, so it can be a dictionary key or a set member. Use a tuple for a fixed record, such as `(x, y)`, and a list for a collection that grows.",
    ),
    (
        "Write a function that checks whether a string is a palindrome.",
        '```python\ndef is_palindrome(s: str) -> bool:\n    cleaned = [c.lower() for c in s if c.isalnum()]\n    return cleaned == cleaned[::-1]\n```\n\nIt ignores case, spaces and punctuation, so `is_palindrome("A man, a plan, a canal: Panama")` is `True`.',
    ),
    (
        "How can I read a large file line by line without loading it all into memory?",
        'Iterate over the file object; it yields one line at a time:\n\n```python\nwith open("big.log", encoding="utf-8") as f:\n    for line in f:\n        handle(line.rstrip("\\n"))\n```',
    ),
    (
        "Explain what a Python generator is.",
        "A generator is a function that uses `yield`. Calling it returns an iterator that runs the body lazily, pausing at each `yield`:\n\n```python\ndef countdown(n):\n    while n > 0:\n        yield n\n        n -= 1\n```\n\nGenerators keep memory flat because they produce one value at a time.",
    ),
    (
        "How do I reverse a linked list in C?",
        "Walk the list once and flip each `next` pointer:\n\n```c\nstruct node *reverse(struct node *head) {\n    struct node *prev = NULL;\n    while (head) {\n        struct node *next = head->next;\n        head->next = prev;\n        prev = head;\n        head = next;\n    }\n    return prev;\n}\n```",
    ),
    (
        "What does `git rebase -i` do?",
        "It replays your commits on a new base and opens an editor listing them, so you can reorder, squash, edit or drop commits before they are applied. Only rebase commits that you have not shared yet.",
    ),
    (
        "Write a SQL query that returns the second highest salary.",
        "```sql\nSELECT MAX(salary) AS second_highest\nFROM employees\nWHERE salary < (SELECT MAX(salary) FROM employees);\n```\n\nIt returns NULL when there is no second value.",
    ),
    (
        "How do I make an HTTP GET request in JavaScript?",
        'Use `fetch`, which returns a promise:\n\n```javascript\nconst response = await fetch("/api/items");\nif (!response.ok) throw new Error(`HTTP ${response.status}`);\nconst items = await response.json();\n```',
    ),
    (
        "How can I remove duplicates from a list while keeping the order?",
        "`dict.fromkeys` keeps the first occurrence of each item and preserves insertion order:\n\n```python\nunique = list(dict.fromkeys(items))\n```",
    ),
    (
        "What is a race condition?",
        "A race condition happens when the result of a program depends on the timing of threads or processes that share state. Two threads that both read a counter, add one and write it back can lose an update. Locks, atomic operations or message passing prevent it.",
    ),
    (
        "Write a Rust function that returns the largest element of a slice.",
        "```rust\nfn largest(xs: &[i32]) -> Option<i32> {\n    xs.iter().copied().max()\n}\n```\n\nIt returns `None` for an empty slice instead of panicking.",
    ),
    (
        "How do I create a virtual environment in Python?",
        "Run `python -m venv .venv`, then activate it with `source .venv/bin/activate` on Linux or macOS, or `.venv\\Scripts\\activate` on Windows. Packages installed with `pip` then stay inside `.venv`.",
    ),
    (
        "Explain Big-O notation briefly.",
        "Big-O describes how the running time or memory of an algorithm grows with the input size, ignoring constant factors. A loop over n items is O(n); two nested loops are O(n^2); binary search is O(log n).",
    ),
    (
        "How do I handle exceptions in Python?",
        "Wrap the risky code in `try` and catch the specific exception:\n\n```python\ntry:\n    value = int(text)\nexcept ValueError:\n    value = 0\n```\n\nCatch the narrowest exception you can; a bare `except:` hides bugs.",
    ),
    (
        "Write a bash one-liner that counts the lines of all Python files in a directory.",
        "```bash\nfind . -name '*.py' -print0 | xargs -0 cat | wc -l\n```",
    ),
    (
        "What is the difference between `==` and `is` in Python?",
        "`==` compares values and `is` compares identity, that is, whether both names refer to the same object. Use `is` only for singletons such as `None`.",
    ),
    (
        "How do I merge two dictionaries?",
        "From Python 3.9 on, use the `|` operator: `merged = a | b`. Keys of `b` win. On older versions write `{**a, **b}`.",
    ),
    (
        "Write a function that computes the nth Fibonacci number iteratively.",
        "```python\ndef fib(n: int) -> int:\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n```",
    ),
    (
        "What is a closure in JavaScript?",
        "A closure is a function together with the variables of the scope where it was defined. It can read and update them even after that scope has returned:\n\n```javascript\nfunction counter() {\n  let n = 0;\n  return () => ++n;\n}\n```",
    ),
    (
        "How can I parse JSON in Go?",
        'Define a struct with tags and call `json.Unmarshal`:\n\n```go\ntype User struct {\n    Name string `json:"name"`\n    Age  int    `json:"age"`\n}\n\nvar u User\nif err := json.Unmarshal(data, &u); err != nil {\n    return err\n}\n```',
    ),
    (
        "How do I time a piece of Python code?",
        'For small snippets use `timeit`: `python -m timeit "sum(range(1000))"`. In a program, take `time.perf_counter()` before and after the code.',
    ),
    (
        "Explain the difference between a process and a thread.",
        "A process has its own memory space; threads live inside a process and share its memory. Threads are cheaper to create and communicate through shared state, while processes are isolated and communicate through pipes, sockets or shared memory.",
    ),
    (
        "Write a Python class for a stack.",
        '```python\nclass Stack:\n    def __init__(self):\n        self._items = []\n\n    def push(self, item):\n        self._items.append(item)\n\n    def pop(self):\n        if not self._items:\n            raise IndexError("pop from empty stack")\n        return self._items.pop()\n\n    def __len__(self):\n        return len(self._items)\n```',
    ),
]

MULTI = [
    [
        ("user", "Can you write a function that flattens a nested list?"),
        (
            "assistant",
            "```python\ndef flatten(xs):\n    out = []\n    for x in xs:\n        if isinstance(x, list):\n            out.extend(flatten(x))\n        else:\n            out.append(x)\n    return out\n```",
        ),
        ("user", "Can you make it a generator?"),
        (
            "assistant",
            "```python\ndef flatten(xs):\n    for x in xs:\n        if isinstance(x, list):\n            yield from flatten(x)\n        else:\n            yield x\n```\n\nCall `list(flatten(nested))` to get a list.",
        ),
    ],
    [
        ("user", "My Flask app returns 404 for /api/users. What should I check?"),
        (
            "assistant",
            'Check that the route is registered with the same path and method, for example `@app.route("/api/users", methods=["GET"])`, and that the module defining it is imported before the app starts. `flask routes` lists every registered route.',
        ),
        ("user", "flask routes shows it as /api/users/ with a trailing slash."),
        (
            "assistant",
            "Then the rule was declared with a trailing slash. Flask redirects `/api/users` to `/api/users/` only for GET; remove the slash from the rule or call the URL with it.",
        ),
    ],
    [
        ("user", "How do I write a unit test in Python?"),
        (
            "assistant",
            "With pytest, write a function whose name starts with `test_` and use plain `assert`:\n\n```python\ndef test_add():\n    assert add(2, 3) == 5\n```\n\nRun `pytest` in the project folder.",
        ),
        ("user", "And how do I test that an exception is raised?"),
        (
            "assistant",
            "Use `pytest.raises` as a context manager:\n\n```python\nimport pytest\n\ndef test_div_zero():\n    with pytest.raises(ZeroDivisionError):\n        1 / 0\n```",
        ),
    ],
]

REFUSAL = (
    "Write a script that deletes the temp files older than a week.",
    "As an AI language model, I cannot perform actions on your computer. However, you could use `find /tmp -mtime +7 -delete`.",
)
NEAR_DUP = ("How do I sort a list of dictionaries by a key in Python ?", QA[0][1])
CONTAMINATED = (
    'Complete this function:\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    """ Check if in given list of numbers, are any two numbers closer to each other than\n    given threshold.\n    """',
    "```python\ndef has_close_elements(numbers, threshold):\n    for i, a in enumerate(numbers):\n        for b in numbers[i + 1:]:\n            if abs(a - b) < threshold:\n                return True\n    return False\n```",
)
SYSTEM = "You are StarChat, a helpful coding assistant."


def dialogues():
    """Every dialogue as (system or None, [(role, text), ...])."""
    out = [(None, [("user", q), ("assistant", a)]) for q, a in QA]
    out += [(SYSTEM, turns) for turns in MULTI]
    out += [(None, [("user", q), ("assistant", a)]) for q, a in (REFUSAL, QA[1], NEAR_DUP, CONTAMINATED)]
    return out


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def oasst_rows(dials, lang="en", prefix="t"):
    """Flat oasst1 rows: each dialogue is a tree with the given path plus one worse-ranked sibling reply."""
    rows = []
    for i, (_, turns) in enumerate(dials):
        parent = None
        for j, (role, text) in enumerate(turns):
            mid = f"{prefix}{i}-m{j}"
            rows.append(
                {
                    "message_id": mid,
                    "parent_id": parent,
                    "message_tree_id": f"{prefix}{i}",
                    "text": text,
                    "role": "prompter" if role == "user" else "assistant",
                    "lang": lang,
                    "rank": 0 if role == "assistant" else None,
                    "deleted": False,
                }
            )
            if role == "assistant":
                rows.append(
                    {
                        "message_id": mid + "-alt",
                        "parent_id": parent,
                        "message_tree_id": f"{prefix}{i}",
                        "text": "I am not sure, maybe search the web.",
                        "role": "assistant",
                        "lang": lang,
                        "rank": 1,
                        "deleted": False,
                    }
                )
            parent = mid
    return rows


def oasst_tree(rows):
    by_parent = {}
    for r in rows:
        by_parent.setdefault(r["parent_id"], []).append(r)

    def node(r):
        n = {k: r[k] for k in ("message_id", "parent_id", "text", "role", "lang", "rank", "deleted")}
        n["replies"] = [node(c) for c in by_parent.get(r["message_id"], [])]
        return n

    return [
        {"message_tree_id": r["message_tree_id"], "tree_state": "ready_for_export", "prompt": node(r)}
        for r in by_parent[None]
    ]


WORSE = "I am not sure, maybe search the web."


def preference_samples(dials):
    """One file per preference format: the good reply chosen, a vague one rejected. Planted: a second pair
    for an already seen prompt (dedup by prompt) and one quoting HumanEval (decontamination). oasst1 pairs
    come from the oasst samples' ranked sibling replies."""
    PREF_OUT.mkdir(parents=True, exist_ok=True)
    single = [(q, a) for q, a in QA[:8]] + [QA[0], CONTAMINATED]
    single[8] = (QA[0][0], "Call `list.sort(key=...)` to sort in place.")  # same prompt, other pair
    write_jsonl(
        PREF_OUT / "trl.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": q}],
                "chosen": [{"role": "assistant", "content": a}],
                "rejected": [{"role": "assistant", "content": WORSE}],
            }
            for q, a in single
        ],
    )
    multi = [turns for s, turns in dials if s is not None]
    rows = []
    for turns in multi:  # UltraFeedback-binarized: string prompt, chosen/rejected as whole dialogues
        msgs = [{"role": "system", "content": SYSTEM}] + [{"role": r, "content": t} for r, t in turns]
        rows.append(
            {
                "prompt": turns[-2][1],
                "prompt_id": f"p{len(rows)}",
                "score_chosen": 9.0,
                "score_rejected": 2.0,
                "chosen": msgs,
                "rejected": msgs[:-1] + [{"role": "assistant", "content": WORSE}],
                "messages": msgs,
            }
        )
    rows += [
        {
            "prompt": q,
            "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": WORSE}],
        }
        for q, a in QA[8:12]
    ]
    write_jsonl(PREF_OUT / "trl_implicit.jsonl", rows)
    write_jsonl(PREF_OUT / "text.jsonl", [{"prompt": q, "chosen": a, "rejected": WORSE} for q, a in QA[12:18]])

    def hh(turns):
        return "".join(f"\n\n{'Human' if r == 'user' else 'Assistant'}: {t}" for r, t in turns)

    write_jsonl(
        PREF_OUT / "hh.jsonl",
        [
            {"chosen": hh(t), "rejected": hh(t[:-1] + [("assistant", WORSE)])}
            for t in multi + [[("user", q), ("assistant", a)] for q, a in QA[18:22]]
        ],
    )


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    dials = dialogues()
    flat = oasst_rows(dials[:14]) + oasst_rows(dials[24:26], lang="de", prefix="de")
    flat.append({**flat[2], "message_id": "t1-m1-deleted", "deleted": True, "rank": 2})
    write_jsonl(OUT / "oasst_flat.jsonl", flat)
    write_jsonl(OUT / "oasst_trees.jsonl", oasst_tree(oasst_rows(dials[14:24])))

    def guanaco(turns):
        return "".join(f"### {'Human' if r == 'user' else 'Assistant'}: {t}" for r, t in turns)

    write_jsonl(OUT / "guanaco.jsonl", [{"text": guanaco(t)} for _, t in dials])

    def sharegpt(system, turns):
        conv = [{"from": "system", "value": system}] if system else []
        return {
            "id": None,
            "conversations": conv + [{"from": "human" if r == "user" else "gpt", "value": t} for r, t in turns],
        }

    sg = [sharegpt(s, t) | {"id": f"sg{i}"} for i, (s, t) in enumerate(dials)]
    (OUT / "sharegpt.json").write_text(json.dumps(sg[:12], indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_jsonl(OUT / "sharegpt.jsonl", sg[12:])

    def messages(system, turns):
        ms = [{"role": "system", "content": system}] if system else []
        return {"messages": ms + [{"role": r, "content": t} for r, t in turns]}

    write_jsonl(OUT / "messages.jsonl", [messages(s, t) for s, t in dials])
    write_jsonl(
        OUT / "prompt_completion.jsonl", [{"prompt": t[0][1], "completion": t[1][1]} for _, t in dials if len(t) == 2]
    )
    alpaca = [{"instruction": q, "input": "", "output": a} for q, a in QA]
    alpaca.append(
        {
            "instruction": "Translate this Python to JavaScript.",
            "input": "print(sum([1, 2, 3]))",
            "output": "```javascript\nconsole.log([1, 2, 3].reduce((a, b) => a + b, 0));\n```",
        }
    )
    (OUT / "alpaca.json").write_text(json.dumps(alpaca, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    preference_samples(dials)


if __name__ == "__main__":
    main()
