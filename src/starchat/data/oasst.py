"""OpenAssistant (oasst1) conversation trees, flat rows or tree export, into root-to-leaf dialogues."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from starchat.data.records import DataError, Example, ReadOptions, Record

ROLE = {"prompter": "user", "assistant": "assistant"}


def is_oasst(rec: dict) -> bool:
    """oasst1's flat rows, or one tree of its message-tree export."""
    return {"message_id", "parent_id"} <= set(rec) or ("message_tree_id" in rec and "prompt" in rec)


def _flatten_tree(rec: Record) -> list[Record]:
    """The message-tree export (nested ``replies``) as flat rows."""
    tree = rec.data.get("prompt")
    if not isinstance(tree, dict):
        raise DataError(f"{rec.where}: field 'prompt' must be the root message object of the tree")
    rows, stack = [], [(tree, None, "prompt")]
    while stack:
        node, parent, path = stack.pop()
        if not isinstance(node, dict):
            raise DataError(f"{rec.where}: field '{path}' must be a message object")
        rows.append(
            Record({**{k: v for k, v in node.items() if k != "replies"}, "parent_id": parent}, f"{rec.where} ({path})")
        )
        replies = node.get("replies") or []
        if not isinstance(replies, list):
            raise DataError(f"{rec.where}: field '{path}.replies' must be a list")
        stack.extend((r, node.get("message_id"), f"{path}.replies[{i}]") for i, r in reversed(list(enumerate(replies))))
    return rows


def _check_row(rec: Record) -> dict:
    row = rec.data
    for key in ("message_id", "text", "role"):
        if not isinstance(row.get(key), str):
            raise DataError(f"{rec.where}: field '{key}' must be a string, got {row.get(key)!r}")
    if row["role"] not in ROLE:
        raise DataError(f"{rec.where}: field 'role' is {row['role']!r}; expected 'prompter' or 'assistant'")
    return row


def load_tree(records: list[Record], opts: ReadOptions, on_invalid: Callable[[DataError], None]):
    """The messages of every tree: (children by parent id, where each message came from). Deleted
    messages, and those in another language than ``opts.lang``, are left out with their subtrees."""
    rows: dict[str, dict] = {}
    where: dict[str, str] = {}
    for rec in records:
        try:
            flat = _flatten_tree(rec) if "prompt" in rec.data and "message_id" not in rec.data else [rec]
            for r in flat:
                row = _check_row(r)
                if row["message_id"] in rows:
                    raise DataError(f"{r.where}: field 'message_id' {row['message_id']!r} appears twice")
                rows[row["message_id"]] = row
                where[row["message_id"]] = r.where
        except DataError as e:
            on_invalid(e)
    children: dict[str | None, list[dict]] = {}
    for row in rows.values():
        if row.get("deleted") or (opts.lang and row.get("lang") != opts.lang):
            continue  # a dropped message takes its whole subtree with it
        children.setdefault(row.get("parent_id"), []).append(row)
    return children, where


def roots(children: dict, where: dict, on_invalid: Callable[[DataError], None]) -> Iterator[dict]:
    """The trees' first messages; a tree that starts with an assistant message is invalid."""
    for root in children.get(None, []):
        if root["role"] != "prompter":
            on_invalid(
                DataError(f"{where[root['message_id']]}: field 'role': a tree must start with a prompter message")
            )
            continue
        yield root


def read_oasst(
    name: str, records: list[Record], opts: ReadOptions, on_invalid: Callable[[DataError], None]
) -> Iterator[Example]:
    """Dialogues along root-to-leaf paths; ``opts.best_path_only`` follows the best-ranked reply."""
    children, where = load_tree(records, opts, on_invalid)
    for root in roots(children, where, on_invalid):
        for path in _paths(root, children, opts.best_path_only):
            while path and path[-1]["role"] == "prompter":
                path = path[:-1]  # a trailing question has no reply to learn from
            if not path:
                continue
            msgs = [{"role": ROLE[r["role"]], "content": r["text"]} for r in path]
            yield Example(
                msgs,
                source=name,
                where=where[path[-1]["message_id"]],
                group=str(root.get("message_tree_id") or root["message_id"]),
                meta={"lang": root.get("lang")},
            )


def _rank(row: dict) -> float:
    r = row.get("rank")
    return float(r) if isinstance(r, (int, float)) else float("inf")


def _paths(root: dict, children: dict, best_only: bool) -> Iterator[list[dict]]:
    """Root-to-leaf paths that alternate prompter/assistant (iterative: trees can be deep)."""
    stack = [[root]]
    while stack:
        path = stack.pop()
        node = path[-1]
        kids = [c for c in children.get(node["message_id"], []) if c["role"] != node["role"]]
        if best_only and kids:
            kids = [min(kids, key=_rank)]
        if not kids:
            yield path
        stack.extend(path + [k] for k in reversed(kids))
