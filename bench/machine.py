"""Facts about the machine, printed above the table and stored in the JSON."""
from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

from .rawnginx import nginx_version


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _meminfo_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def mem_total_gib() -> float | None:
    kib = _meminfo_kib("MemTotal")
    return None if kib is None else kib / (1 << 20)


def mem_available_bytes() -> int | None:
    kib = _meminfo_kib("MemAvailable")
    return None if kib is None else kib * 1024


def filesystem(path: Path) -> str:
    """Type and device of the mount holding path (a tmpfs /tmp would make "disk" mean RAM)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if str(path).startswith(mount.rstrip("/") + "/") and len(mount) >= len(best):
                best, kind = mount, f"{fstype} on {device}, mounted at {mount}"
    except OSError:
        pass
    return kind


def facts(workdir: Path) -> dict:
    usage = shutil.disk_usage(workdir)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "sha_ni": "sha_ni" in cpu_flags(),
        "mem_total_gib": round(mem_total_gib() or 0, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "nginx": nginx_version(),
        "workdir": str(workdir),
        "disk_free_gib": round(usage.free / (1 << 30), 1),
        "filesystem": filesystem(workdir.resolve()),
        "loadavg": os.getloadavg(),
    }
