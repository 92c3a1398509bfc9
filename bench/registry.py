"""The benchmark registry and the row every benchmark returns.

A benchmark is a function `fn(ctx: BenchContext) -> list[Row]`, registered with `@benchmark(...)`.
Benchmarks run in registration order; `--only NAME` runs just one (its prerequisites, like the
uploaded file for `download`, are created on demand by the context). Later issues add e.g.
`chunked_upload` (4 parallel PUTs to pre-signed URLs), `reupload` and `changes_page` the same way:
write the function, decorate it, build rows with `throughput_row` / `limit_row` / `info_row`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field


class BenchError(RuntimeError):
    """A benchmark could not produce a trustworthy number (wrong bytes, HTTP error, ...)."""


@dataclass
class Row:
    name: str
    unit: str                         # "MiB/s" or "MiB"
    satchel: float | None             # Satchel's figure
    machine: float | None = None      # the machine's own limit in the same unit
    machine_label: str = ""           # what the limit is ("raw nginx PUT")
    ratio: float | None = None        # satchel / machine
    target: str = ""                  # e.g. ">= 0.50x", "<= 64 MiB"
    result: str = "INFO"              # PASS | MISS | INFO | ERROR
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def throughput_row(name: str, satchel: float, machine: float, machine_label: str,
                   min_ratio: float, **extra) -> Row:
    """A MiB/s row that passes when satchel / machine >= min_ratio."""
    ratio = satchel / machine if machine else None
    result = "PASS" if ratio is not None and ratio >= min_ratio else "MISS"
    return Row(name=name, unit="MiB/s", satchel=satchel, machine=machine,
               machine_label=machine_label, ratio=ratio, target=f">= {min_ratio:.2f}x",
               result=result, **extra)


def limit_row(name: str, value: float, unit: str, maximum: float, **extra) -> Row:
    """An absolute figure (e.g. RSS growth) that passes when value <= maximum."""
    return Row(name=name, unit=unit, satchel=value, target=f"<= {maximum:g} {unit}",
               result="PASS" if value <= maximum else "MISS", **extra)


def info_row(name: str, unit: str, satchel: float | None, machine: float | None,
             machine_label: str, **extra) -> Row:
    ratio = satchel / machine if satchel is not None and machine else None
    return Row(name=name, unit=unit, satchel=satchel, machine=machine,
               machine_label=machine_label, ratio=ratio, target="info", result="INFO", **extra)


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    fn: Callable


BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str, description: str):
    def register(fn):
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} registered twice")
        BENCHMARKS[name] = Benchmark(name, description, fn)
        return fn
    return register
