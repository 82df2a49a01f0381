"""Helpers the benchmark scripts share (importable because each script's folder is on sys.path)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass(frozen=True)
class Usage:
    """One look at a process in /proc: resident and peak resident memory, CPU time so far."""

    rss_mb: float
    peak_rss_mb: float
    cpu_s: float


def usage(pid: int) -> Usage:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # fields 3 onwards
    utime, stime = int(after_name[11]), int(after_name[12])  # fields 14 and 15, in clock ticks
    return Usage(
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        peak_rss_mb=int(status["VmHWM"].split()[0]) / 1024,
        cpu_s=(utime + stime) / os.sysconf("SC_CLK_TCK"),
    )
