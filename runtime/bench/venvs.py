"""Per-peer virtual environments under the bench work directory.

Each peer server gets its own venv so its pins (uvloop for MLServer, tritonclient 2.50 for
perf_analyzer, ...) never touch the project's environment. A venv is reused when the marker file
inside it lists exactly the requirements asked for; otherwise it is rebuilt from the registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

MARKER_NAME = "davit-bench-requirements.txt"


@dataclass(frozen=True)
class VenvSpec:
    name: str
    requirements: tuple[str, ...]


def public_version(version: str) -> str:
    """Drop a local version label (`2.15.0+cu132` -> `2.15.0`) so the pin resolves on PyPI."""
    return version.split("+", 1)[0]


def peer_specs(torch_version: str) -> dict[str, VenvSpec]:
    """Requirements of every peer venv; torch is pinned to the version the bench itself uses."""
    torch_pin = f"torch=={public_version(torch_version)}"
    specs = [
        VenvSpec("pytriton", ("nvidia-pytriton==0.7.0", torch_pin)),
        VenvSpec("kserve", ("kserve==0.21.0", torch_pin)),
        # Newer uvloop crash-loops MLServer's workers (BENCH-NOTES.md).
        VenvSpec("mlserver", ("mlserver==1.7.1", "uvloop==0.21.0", torch_pin)),
        # The 2.50.0 wheel is the last one that ships a working bin/perf_analyzer; it links
        # against libcudart even for CPU-only use.
        VenvSpec("perf_analyzer", ("tritonclient[all]==2.50.0", "nvidia-cuda-runtime-cu12")),
    ]
    return {spec.name: spec for spec in specs}


def marker_text(spec: VenvSpec) -> str:
    return "\n".join(sorted(spec.requirements)) + "\n"


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def is_current(venv_dir: Path, spec: VenvSpec) -> bool:
    marker = venv_dir / MARKER_NAME
    return (
        venv_python(venv_dir).exists()
        and marker.exists()
        and marker.read_text() == marker_text(spec)
    )


def base_interpreter() -> Path:
    """The interpreter the project venv was made from (peers need its shared libpython)."""
    candidate = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return candidate if candidate.exists() else Path(sys.executable)


def find_uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise RuntimeError("uv not found: install it with `pip install uv`")
    return found


def ensure_venv(work_dir: Path, spec: VenvSpec, log: Path) -> Path:
    """Create (or reuse) the venv for `spec`; returns its directory."""
    venv_dir = work_dir / "venvs" / spec.name
    if is_current(venv_dir, spec):
        return venv_dir
    uv = find_uv()
    if venv_dir.exists():
        shutil.rmtree(venv_dir)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "UV_LINK_MODE": os.environ.get("UV_LINK_MODE", "hardlink")}
    with log.open("w") as out:
        subprocess.run(
            [uv, "venv", "-q", "-p", str(base_interpreter()), str(venv_dir)],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        subprocess.run(
            [uv, "pip", "install", "-p", str(venv_python(venv_dir)), *spec.requirements],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    (venv_dir / MARKER_NAME).write_text(marker_text(spec))
    return venv_dir


def installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str]) -> int:
    """`python -m bench.venvs NAME...` builds the named venvs (all when none are named)."""
    work_dir = Path(__file__).resolve().parent / ".work"
    specs = peer_specs(installed_version("torch"))
    for name in argv or list(specs):
        venv_dir = ensure_venv(work_dir, specs[name], work_dir / "logs" / f"venv-{name}.log")
        print(f"{name}: {venv_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
