"""What a Dataflow worker gets, on this machine: terrabeam's source distribution built as `--setup_file`
stages it, installed into a fresh virtual environment with only the package's declared requirements
(not the development .venv, not the repository on sys.path), and Beam's SDK worker pool started from
that environment, for jobs run through Beam's portable runner with the EXTERNAL environment.

The environment is made with uv: from its wheel cache (~/.cache/uv, filled by the first build on a
machine: 13 s, 2.2 GB from PyPI) a fresh environment takes 2-3 s, hard-linked, so every test module
that needs one builds its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipelines", "transforms", "model")
# Files in the packages' folders that are not part of the installed package: build files of the serving
# image, read by `docker build` from a checkout.
NOT_INSTALLED = ("model/serving/Dockerfile.serve", "model/serving/Dockerfile.serve.dockerignore")
# What the copy of the repository that the sdist is built from leaves out (as a fresh clone would).
_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "out",
    ".cache",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "dist",
    "site",
)


def outside_environment() -> dict[str, str]:
    """This process's environment variables without what ties a process to the development environment.

    PYTHONDONTWRITEBYTECODE goes too: uv installs no bytecode, and without it every process of the
    staged environment would compile TensorFlow's and Beam's modules again (the first one writes them).
    """
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def build_sdist(root: Path, out: Path) -> Path:
    """`python setup.py sdist`, as Beam's stager runs it for --setup_file, from a copy of `root`."""
    src = out / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(root, src, ignore=_IGNORE)
    dist = out / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "setup.py", "sdist", "--dist-dir", str(dist)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"setup.py sdist failed:\n{result.stderr[-3000:]}")
    (sdist,) = dist.glob("*.tar.gz")
    return sdist


def _uv(*args: str, timeout: int = 900) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "uv", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=outside_environment(),
    )
    if result.returncode != 0:
        raise RuntimeError(f"uv {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")


def staged_environment(folder: Path, root: Path = ROOT) -> Path:
    """A fresh virtual environment in `folder` with terrabeam installed from its sdist and nothing but the
    sdist's declared requirements, at the versions requirements.txt pins (as CI tests them); returns
    the environment's folder."""
    sdist = build_sdist(root, folder / "build")
    env = folder / "env"
    # The base interpreter, not the .venv's: nothing of the development environment comes along.
    base = getattr(sys, "_base_executable", sys.executable)
    _uv("venv", "--quiet", "--python", base, str(env))
    _uv(
        "pip",
        "install",
        "--quiet",
        "--python",
        str(env / "bin" / "python"),
        str(sdist),
        "--constraint",
        str(root / "requirements.txt"),
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def worker_pool(env: Path, workdir: Path) -> Iterator[str]:
    """Beam's SDK worker pool, started from `env` (its workers are that environment's Python: the pool
    runs `python` from PATH) in `workdir`, away from the repository; yields its address."""
    port = free_port()
    clean = outside_environment()
    clean["PATH"] = f"{env / 'bin'}{os.pathsep}{clean.get('PATH', '')}"
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "worker_pool.log", "w")
    pool = subprocess.Popen(
        [
            str(env / "bin" / "python"),
            "-m",
            "apache_beam.runners.worker.worker_pool_main",
            f"--service_port={port}",
        ],
        cwd=workdir,
        env=clean,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if pool.poll() is not None:
                raise RuntimeError(
                    f"the worker pool stopped:\n{(workdir / 'worker_pool.log').read_text()[-3000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("localhost", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the worker pool did not listen within 120 s")
            time.sleep(0.2)
        yield f"localhost:{port}"
    finally:
        pool.terminate()
        try:
            pool.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pool.kill()
        log.close()


def portable_runner_options(address: str) -> list[str]:
    """A job's runner options for workers from the pool at `address`."""
    return [
        "--runner=PortableRunner",
        "--job_endpoint=embed",
        "--environment_type=EXTERNAL",
        f"--environment_config={address}",
    ]
