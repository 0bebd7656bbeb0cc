"""`starchat data from-code`: dialogues from documented functions, HumanEval overlaps removed."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import datasets
import pytest

from starchat.cli import main
from starchat.data.from_code import FromCodeOptions, build_from_code, collect
from starchat.errors import StarchatError

SOURCE = textwrap.dedent('''
    def clamp(value, low=0, high=1):
        """Return value limited to the closed interval [low, high]."""
        if value < low:
            return low
        return min(value, high)


    def has_close_elements(numbers, threshold):
        """Check if in given list of numbers, are any two numbers closer to each other than threshold."""
        for a in numbers:
            for b in numbers:
                pass
        return False


    def _private(x):
        """A private helper that should never be a training example."""
        y = x
        return y


    def undocumented(x):
        y = x + 1
        z = y * 2
        return z


    class Box:
        def area(self, scale: float = 1.0) -> float:
            """Return the area of the box, scaled by the given factor."""
            w = self.w * scale
            h = self.h * scale
            return w * h
''')


@pytest.fixture
def src_dir(tmp_path):
    d = tmp_path / "mypkg"
    d.mkdir()
    (d / "geometry.py").write_text(SOURCE)
    (d / "broken.py").write_text("def oops(:\n")
    return d


def test_dialogue_shape_and_filters(src_dir):
    rows, stats = collect([str(src_dir)], FromCodeOptions(min_lines=2, include_methods=False))
    assert [r["name"] for r in rows] == ["clamp"]
    user, reply = rows[0]["messages"]
    assert user["role"] == "user" and "`def clamp(value, low=0, high=1)`" in user["content"]
    assert "closed interval [low, high]" in user["content"]
    assert reply["role"] == "assistant"
    assert reply["content"].startswith("```python\ndef clamp(") and reply["content"].endswith(
        "return min(value, high)\n```"
    )
    assert stats.dropped["humaneval_overlap"] == 1 and stats.dropped["private"] == 1
    assert stats.dropped["no_docstring"] == 1 and stats.unparsable_files == 1


def test_methods_are_optional(src_dir):
    rows, _ = collect([str(src_dir)], FromCodeOptions(min_lines=2, include_methods=True))
    sigs = {r["signature"] for r in rows}
    assert "def area(self, scale: float=1.0) -> float" in sigs
    rows, _ = collect([str(src_dir)], FromCodeOptions(min_lines=2, include_methods=False))
    assert "area" not in {r["name"] for r in rows}


def test_a_package_gets_its_methods_by_default_and_the_request_names_the_class(src_dir):
    rows, _ = collect([str(src_dir)], FromCodeOptions(min_lines=2))
    area = next(r for r in rows if r["name"] == "area")
    assert area["messages"][0]["content"].startswith(
        "Write a Python method of the class `Box` with the signature `def area(self"
    )


def test_stdlib_by_default_stays_functions_only():
    """recipes/nano-cpu.yaml and the stdlib-eval / stdlib-pairs sets are built from these rows."""
    rows, _ = collect([], FromCodeOptions(max_functions=300))
    assert not any("method of the class" in r["messages"][0]["content"] for r in rows)


@pytest.fixture
def class_heavy(tmp_path):
    """A package like rich: one documented module-level function, the rest in classes."""
    d = tmp_path / "widgets"
    d.mkdir()
    methods = "".join(
        f'    def draw_{i}(self, width):\n        """Draw part {i} of the widget at the given width."""\n'
        f"        line = '-' * width\n        return line + str({i})\n\n"
        for i in range(30)
    )
    (d / "widget.py").write_text(
        'def make(kind):\n    """Make a widget of the given kind, ready to draw."""\n    w = Widget()\n'
        "    w.kind = kind\n    return w\n\n\nclass Widget:\n" + methods
    )
    return d


def test_a_class_heavy_package_gets_a_real_validation_split_by_default(class_heavy, tmp_path):
    out = build_from_code([str(class_heavy)], tmp_path / "ds")
    dd = datasets.load_from_disk(str(out))
    assert len(dd["train"]) + len(dd["test"]) == 31
    assert len(dd["test"]) == 7  # min(min_test 8, a quarter of 31); 5% alone would be 1 or 2


def test_the_split_grows_to_min_test_without_moving_the_hash_split_rows(class_heavy):
    from starchat.data.from_code import split_rows

    rows, _ = collect([str(class_heavy)], FromCodeOptions())
    plain = split_rows(rows, FromCodeOptions(min_test=0))
    topped = split_rows(rows, FromCodeOptions(min_test=6))
    assert {r["name"] for r in plain["test"]} <= {r["name"] for r in topped["test"]}
    assert len(topped["test"]) == 6


def test_recipe_options_are_the_command_options(class_heavy, tmp_path, capsys):
    from starchat.train.config import DataConfig
    from starchat.train.data import ensure_dataset

    via_cli = tmp_path / "cli"
    assert (
        main(
            [
                "data",
                "from-code",
                str(class_heavy),
                "--output",
                str(via_cli),
                "--include-methods",
                "--min-lines",
                "2",
                "--min-test",
                "3",
                "--test-size",
                "0",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    via_recipe = tmp_path / "recipe"
    cfg = DataConfig(
        dataset=str(via_recipe),
        from_code=[str(class_heavy)],
        from_code_options={"include_methods": True, "min-lines": 2, "min_test": 3, "test_size": 0, "seed": 5},
    )
    assert ensure_dataset(cfg)
    cli_stats = json.loads((via_cli / "stats.json").read_text())
    recipe_stats = json.loads((via_recipe / "stats.json").read_text())
    assert cli_stats["options"] == recipe_stats["options"]
    assert (recipe_stats["train"], recipe_stats["test"]) == (cli_stats["train"], cli_stats["test"]) == (28, 3)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["data", "from-code", "--help"])
    help_text = capsys.readouterr().out
    for f in dataclasses.fields(FromCodeOptions):
        assert "--" + f.name.replace("_", "-") in help_text


@pytest.mark.parametrize(
    "options, message",
    [
        ({"include_method": True}, "unknown option 'include_method'; did you mean 'include_methods'"),
        ({"test_size": "a lot"}, "data.from_code_options.test_size: expected float, got 'a lot'"),
        ({"min_test": 2.5}, "data.from_code_options.min_test: expected int, got 2.5"),
        ("include_methods", "expected a mapping of option names to values"),
    ],
)
def test_bad_recipe_options_are_one_clear_line(options, message, six_functions, tmp_path):
    from starchat.train.config import DataConfig
    from starchat.train.data import ensure_dataset

    cfg = DataConfig(dataset=str(tmp_path / "ds"), from_code=[str(six_functions)], from_code_options=options)
    with pytest.raises(StarchatError, match=message):
        ensure_dataset(cfg)
    assert not (tmp_path / "ds").exists()


def test_build_writes_splits_and_stats_via_cli(src_dir, tmp_path, capsys):
    (src_dir / "more.py").write_text(
        "\n".join(
            f'def f{i}(x):\n    """Return x plus {i}, computed the long way round."""\n    y = x\n    y += {i}\n'
            f"    return y\n"
            for i in range(40)
        )
    )
    out = tmp_path / "out"
    assert (
        main(["data", "from-code", str(src_dir), "--output", str(out), "--min-lines", "2", "--test-size", "0.2"]) == 0
    )
    dd = datasets.load_from_disk(str(out))
    assert set(dd) == {"train", "test"} and len(dd["train"]) + len(dd["test"]) == 42  # with Box.area
    assert 0 < len(dd["test"]) < 20
    stats = json.loads((out / "stats.json").read_text())
    assert stats["kept"] == 42 and "written to" in capsys.readouterr().out
    with pytest.raises(StarchatError, match="--overwrite"):
        build_from_code([str(src_dir)], out)


def test_stdlib_by_default_excludes_tests_and_humaneval(tmp_path):
    rows, stats = collect([], FromCodeOptions(max_functions=40))
    assert len(rows) == 40 and all(r["source"] == "stdlib" for r in rows)
    assert not any(r["module"].startswith(("test/", "idlelib/")) for r in rows)


def test_unknown_source_is_a_clear_error():
    with pytest.raises(StarchatError, match="not 'stdlib', a directory"):
        collect(["no_such_package_xyz"], FromCodeOptions())


@pytest.fixture
def six_functions(tmp_path):
    src = tmp_path / "pkg"
    src.mkdir()
    (src / "ops.py").write_text(
        "".join(
            f'def scale_{i}(x, factor={i}):\n    """Multiply x by {i}, then add one."""\n    y = x * factor\n'
            f"    z = y + 1\n    return z\n\n\n"
            for i in range(2, 8)
        )
    )
    return src


def test_train_builds_a_missing_from_code_dataset_once_while_other_ranks_wait(six_functions, tmp_path):
    """Every rank of a distributed run asks for the dataset at once: one builds, the others wait, then read it."""
    import threading

    from starchat.fsio import file_lock
    from starchat.train.config import DataConfig
    from starchat.train.data import ensure_dataset

    out = tmp_path / "built"
    cfg = DataConfig(dataset=str(out), from_code=[str(six_functions)])
    result = []
    with file_lock(tmp_path / ".built.lock"):  # another rank is building it
        waiter = threading.Thread(target=lambda: result.append(ensure_dataset(cfg)))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not out.exists()
        build_from_code([str(six_functions)], out)
    waiter.join(30)
    assert result == [False]  # it found the other rank's dataset instead of building (or swapping) its own
    assert not ensure_dataset(cfg)


def test_one_function_is_a_clear_error_not_an_empty_split(src_dir, tmp_path):
    with pytest.raises(StarchatError, match="only 1 documented function found .* at least 2"):
        build_from_code(
            [str(src_dir)], tmp_path / "out", FromCodeOptions(min_lines=2, test_size=0.0, include_methods=False)
        )


def test_train_builds_the_from_code_dataset_when_missing(six_functions, tmp_path):
    from starchat.train.config import DataConfig
    from starchat.train.data import ensure_dataset

    out = tmp_path / "built"
    assert ensure_dataset(DataConfig(dataset=str(out), from_code=[str(six_functions)])) is True
    built = datasets.load_from_disk(str(out))
    assert len(built["train"]) + len(built["test"]) == 6


def test_runs_from_before_from_code_options_stay_the_same_run():
    """A finished run recorded without data.from_code_options is not 'a different run' when rerun now."""
    from starchat.train.checkpoint import run_fingerprint
    from starchat.train.config import TrainConfig

    now = TrainConfig().to_dict()
    before = TrainConfig().to_dict()
    del before["data"]["from_code_options"]
    assert run_fingerprint(now) == run_fingerprint(before)
    now["data"]["from_code_options"] = {"include_methods": False}
    assert run_fingerprint(now) != run_fingerprint(before)


def test_the_from_code_recipe_loads_and_its_options_are_valid():
    """recipes/from-code-cpu.yaml, the one to copy for your own package: every dialogue kept by default."""
    from pathlib import Path

    from starchat.data.from_code import options_from_mapping
    from starchat.train.config import load_config

    cfg = load_config(Path(__file__).parents[2] / "recipes" / "from-code-cpu.yaml")
    opts = options_from_mapping(cfg.data.from_code_options)
    assert opts.include_methods is True and opts.min_test == 8
    assert cfg.data.max_train_samples is None and cfg.training.new_token_lr_multiplier > 1
