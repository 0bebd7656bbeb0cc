"""Build llama.cpp's own `llama-server` from the source the installed llama-cpp-python vendors (bench only).

The anchor for the serving bench must be the llama.cpp a user would run instead, at the same version
as the one starchat calls, built with the same (default) ggml options as llama-cpp-python's build:
native CPU flags and OpenMP on. It lives in the bench's scratch directory (``.runs/bench``), is never
a dependency, and is cached: a second call returns the binary at once (``STARCHAT_BENCH_DIR`` points
another checkout at the same cache).

    python bench/llama_server_build.py [--scratch .runs/bench] [--jobs 2]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# STARCHAT_BENCH_DIR: another checkout's scratch dir, to reuse a build made there.
DEFAULT_SCRATCH = Path(os.environ.get("STARCHAT_BENCH_DIR") or ROOT / ".runs" / "bench")

# Release build of the server alone: no curl/openssl (nothing is downloaded at run time), no web UI
# (its prebuilt assets would be fetched from a hub), shared/static as llama.cpp defaults.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
]


def installed_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def source_dir(scratch: Path, version: str) -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist of ``version``, downloaded and unpacked once."""
    unpacked = scratch / f"llama_cpp_python-{version}"
    src = unpacked / "vendor" / "llama.cpp"
    if (src / "CMakeLists.txt").is_file():
        return src
    sdists = scratch / "sdist"
    archive = sdists / f"llama_cpp_python-{version}.tar.gz"
    if not archive.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"llama-cpp-python=={version}",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                str(sdists),
            ],
            check=True,
            timeout=900,
        )
    with tarfile.open(archive) as tf:
        tf.extractall(scratch, filter="data")
    if not (src / "CMakeLists.txt").is_file():
        raise RuntimeError(f"{archive} has no vendor/llama.cpp")
    return src


def build(scratch: Path = DEFAULT_SCRATCH, jobs: int | None = None, version: str | None = None) -> Path:
    """The path of the cached `llama-server` binary, building it first if it is missing."""
    version = version or installed_version()
    out = scratch / "llama-server" / version
    binary = out / "bin" / "llama-server"
    if binary.is_file():
        return binary
    src = source_dir(scratch, version)
    jobs = jobs or len(os.sched_getaffinity(0))
    print(f"building llama-server {version} from {src} (a few minutes, once)", flush=True)
    subprocess.run(
        ["cmake", "-S", str(src), "-B", str(out), "-G", "Ninja", *CMAKE_FLAGS], check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        ["cmake", "--build", str(out), "--target", "llama-server", "-j", str(jobs)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not binary.is_file():
        raise RuntimeError(f"the build finished but {binary} is missing")
    return binary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--version", default=None, help="default: the installed llama-cpp-python's")
    args = ap.parse_args()
    print(build(args.scratch, args.jobs, args.version))


if __name__ == "__main__":
    main()
