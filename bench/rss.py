"""Find a gunicorn master's workers and sample a process's resident memory from /proc."""
from __future__ import annotations

import os
import threading
import time

from .registry import BenchError


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses; the fields after the last ')' are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> list[int]:
    """Direct children (the kernel's task/*/children needs CONFIG_PROC_CHILDREN; scan instead)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and parent_pid(int(entry)) == pid:
            found.append(int(entry))
    return sorted(found)


def single_worker(master_pid: int, timeout_seconds: float = 10) -> int:
    deadline = time.monotonic() + timeout_seconds
    children: list[int] = []
    while time.monotonic() < deadline:
        children = children_of(master_pid)
        if len(children) == 1:
            return children[0]
        time.sleep(0.1)
    raise BenchError(f"expected exactly one worker under gunicorn master {master_pid}, "
                     f"found {children}")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS since the process started) in KiB."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
    except OSError as exc:
        raise BenchError(f"process {pid} is gone ({exc})") from None
    if "VmRSS" not in values:
        raise BenchError(f"no VmRSS for process {pid} (a zombie?)")
    return values


class RssSampler:
    """Samples VmRSS of one pid every `interval` seconds in a thread, for at most `max_seconds`."""

    def __init__(self, pid: int, interval: float = 0.05, max_seconds: float = 3600):
        self.pid, self.interval, self.max_seconds = pid, interval, max_seconds
        self.samples: list[tuple[float, int]] = []  # (monotonic seconds, VmRSS KiB)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.samples.append((time.monotonic(), memory_kib(self.pid)["VmRSS"]))
            except BenchError as exc:
                self.error = str(exc)
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak_kib(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (bounded by the process table)."""
    found, frontier = [], [pid]
    while frontier and len(found) < 4096:
        current = frontier.pop()
        found.append(current)
        frontier.extend(children_of(current))
    return found


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU seconds used by named process trees (and by this process) between enter and exit."""

    def __init__(self, roots: dict[str, int]):
        self.trees = {name: process_tree(pid) for name, pid in roots.items()}
        self.used: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        times = os.times()
        now = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.trees.items()}
        now["client"] = times.user + times.system
        return now

    def __enter__(self) -> "CpuMeter":
        self._before = self._now()
        return self

    def __exit__(self, *exc_info) -> None:
        after = self._now()
        self.used = {name: round(after[name] - self._before[name], 2) for name in after}

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.used.items()
                         if seconds >= 0.01)
