"""`starchat chat` on a scripted engine that streams one tall markdown reply, for the tmux terminal tests.

Run as a program (``python chatterm_fake.py``): the real CLI with the engine loader replaced.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

CODE = [
    "class Node:",
    '    """A binary search tree node."""',
    "",
    "    def __init__(self, key):",
    "        self.key = key",
    "        self.left = None",
    "        self.right = None",
    "",
    "",
    "def insert(root, key):",
    "    # walk down from the root until an empty child is found, then hang the new node there (no rebalancing)",
    "    if root is None:",
    "        return Node(key)",
    "    if key < root.key:",
    "        root.left = insert(root.left, key)",
    "    else:",
    "        root.right = insert(root.right, key)",
    "    return root",
    "",
    "",
    "def inorder(root):",
    "    if root is not None:",
    "        yield from inorder(root.left)",
    "        yield root.key",
    "        yield from inorder(root.right)",
    "",
    "",
    "def height(root):",
    "    if root is None:",
    "        return 0",
    "    return 1 + max(height(root.left), height(root.right))",
    "",
    "",
    "def contains(root, key):",
    "    while root is not None:",
    "        if key == root.key:",
    "            return True",
    "        root = root.left if key < root.key else root.right",
    "    return False",
]
PROSE_BEFORE = [f"Paragraph {i}: a binary search tree keeps smaller keys on the left side." for i in range(1, 9)]
PROSE_AFTER = [f"Note {i}: the tree is not balanced, so sorted input makes it a list." for i in range(1, 7)]
LAST = "That is the whole tree."
REPLY = (
    "\n\n".join(PROSE_BEFORE)
    + "\n\n```python\n"
    + "\n".join(CODE)
    + "\n```\n\n"
    + "\n\n".join(PROSE_AFTER)
    + "\n\n"
    + LAST
    + "\n"
)


class _Stream:
    """Shaped like the engine's Generation: iterate the deltas, then read .completion."""

    def __init__(self, text: str) -> None:
        self.text, self.completion = text, None

    def __iter__(self):
        for i in range(0, len(self.text), 6):  # token-sized pieces, slow enough for the live view to redraw
            time.sleep(0.004)
            yield self.text[i : i + 6]
        self.completion = SimpleNamespace(text=self.text, finish_reason="stop")

    def close(self) -> None:
        pass


class FakeEngine:
    model_name, context_length = "fake", 4096

    def stream(self, conversation, params, cancel=None):
        return _Stream(REPLY)

    def close(self) -> None:
        pass


def main() -> int:
    import starchat.chat as chat_module
    from starchat.cli import main as cli_main

    chat_module.load_engine = lambda *a, **k: FakeEngine()
    return cli_main(["chat", "--no-review", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
