"""What a process costs: its resident memory."""

from __future__ import annotations

import os
from pathlib import Path


def rss_mb(pid: int | None = None) -> float:
    """The resident set size of a process (this one by default), in MiB."""
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for process {pid or os.getpid()}")
