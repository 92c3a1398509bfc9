"""The results table (stdout) and the JSON file."""
from __future__ import annotations

import json
from pathlib import Path

from .registry import Row

HEADER = ("name", "satchel", "machine limit", "ratio", "target", "result")


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f} {unit}"


def format_table(rows: list[Row]) -> str:
    cells = [HEADER]
    for row in rows:
        machine = _figure(row.machine, row.unit)
        if row.machine is not None and row.machine_label:
            machine += f" ({row.machine_label})"
        cells.append((row.name, _figure(row.satchel, row.unit), machine,
                      "-" if row.ratio is None else f"{row.ratio:.2f}x",
                      row.target or "-", row.result))
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    def fmt(line):
        return " | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
    out = [fmt(cells[0]), "-+-".join("-" * w for w in widths)]
    out += [fmt(line) for line in cells[1:]]
    notes = [f"  {row.name}: {note}" for row in rows for note in row.notes]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def format_facts(facts: dict, extra: dict) -> str:
    lines = [
        f"machine: {facts['nproc']} CPUs ({facts['cpu_model']}, sha_ni={'yes' if facts['sha_ni'] else 'no'}), "
        f"{facts['mem_total_gib']} GiB RAM, kernel {facts['kernel']}, load {', '.join(f'{x:.2f}' for x in facts['loadavg'])}",
        f"python {facts['python']} ({facts['python_executable']}), nginx {facts['nginx']}",
        f"disk free at {facts['workdir']}: {facts['disk_free_gib']} GiB ({facts['filesystem']})",
    ]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines)


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
