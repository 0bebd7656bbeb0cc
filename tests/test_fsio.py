"""Atomic writes: the new content appears whole, the old is gone, and no temporary is left behind."""

from starchat.fsio import replace_dir, write_text_atomic


def test_write_text_atomic_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "a.json"
    write_text_atomic(p, "old")
    write_text_atomic(p, "new")
    assert p.read_text() == "new" and [x.name for x in p.parent.iterdir()] == ["a.json"]


def test_replace_dir_swaps_an_existing_folder(tmp_path):
    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "fresh.txt").write_text("fresh")
    assert replace_dir(new, target) == target
    assert [x.name for x in target.iterdir()] == ["fresh.txt"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]
