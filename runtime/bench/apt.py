"""The Debian packages a benchmark needs: installed when run as root, else the command to run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence


def ensure_packages(
    missing: Sequence[str], log: Callable[[str], None], *, recommends: bool = True
) -> None:
    """Install `missing` with apt-get (as root), or exit saying what to run."""
    if not missing:
        return
    flags = "-y" if recommends else "-y --no-install-recommends"
    install = f"apt-get update && apt-get install {flags} {' '.join(missing)}"
    if os.geteuid() != 0:
        raise SystemExit(f"missing system packages; run as root:\n  {install}")
    log(f"installing {' '.join(missing)}")
    subprocess.run(["sh", "-c", f"DEBIAN_FRONTEND=noninteractive {install}"], check=True)
