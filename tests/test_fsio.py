"""Atomic writes: the new content appears whole, the old is gone, and no temporary is left behind."""

import os
import stat

import pytest

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


def test_file_lock_holds_a_second_holder_back_until_released(tmp_path):
    import threading

    from starchat.fsio import file_lock

    got = threading.Event()

    def second():
        with file_lock(tmp_path / "x.lock"):
            got.set()

    with file_lock(tmp_path / "x.lock"):
        t = threading.Thread(target=second)
        t.start()
        assert not got.wait(0.3)  # a separate open file: flock makes it wait, even in this process
    assert got.wait(5)
    t.join()


def test_replace_dir_killed_after_its_first_rename_still_leaves_a_target(tmp_path, monkeypatch):
    import os

    import pytest

    import starchat.fsio as fsio

    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "fresh.txt").write_text("fresh")
    real = os.replace

    def killed_after(src, dst):
        real(src, dst)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(fsio.os, "replace", killed_after)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(new, target)
    assert target.is_dir() and [x.name for x in target.iterdir()] == ["fresh.txt"]


def test_replace_dir_falls_back_to_two_renames_without_exchange(tmp_path, monkeypatch):
    import starchat.fsio as fsio

    monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    new.mkdir()
    (new / "fresh.txt").write_text("fresh")
    replace_dir(new, target)
    assert [x.name for x in target.iterdir()] == ["fresh.txt"] and [x.name for x in tmp_path.iterdir()] == ["out"]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_write_text_atomic_follows_the_umask_not_mkstemps_0600(tmp_path, umask_022):
    p = tmp_path / "summary.json"
    write_text_atomic(p, "{}")
    assert _mode(p) == 0o644  # what open() would give: another user can read the run
    os.umask(0o027)
    write_text_atomic(tmp_path / "report.md", "x")
    assert _mode(tmp_path / "report.md") == 0o640


def test_write_text_atomic_keeps_an_existing_files_mode(tmp_path, umask_022):
    p = tmp_path / "README.md"
    p.write_text("old")
    os.chmod(p, 0o664)
    write_text_atomic(p, "new")
    assert p.read_text() == "new" and _mode(p) == 0o664


def test_replace_dir_publishes_a_mkdtemp_folder_under_the_umask(tmp_path, umask_022):
    from starchat.fsio import temp_dir_beside

    target = tmp_path / "model"
    tmp = temp_dir_beside(target)  # mkdtemp: 0700
    (tmp / "config.json").write_text("{}")
    replace_dir(tmp, target)
    assert _mode(target) == 0o755
    os.chmod(target, 0o750)  # a replaced folder keeps the mode its owner gave it
    tmp = temp_dir_beside(target)
    replace_dir(tmp, target)
    assert _mode(target) == 0o750
