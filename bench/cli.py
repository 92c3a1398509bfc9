"""`python -m bench`: run the benchmarks, print the table, write var/bench/results-<ts>.json."""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import benchmarks, chunked, pages, small  # noqa: F401  (registers the benchmarks)
from .context import BenchContext, log
from .machine import facts as machine_facts
from .payload import MIB
from .registry import BENCHMARKS, BenchError, Row
from .report import format_facts, format_table, write_json

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Satchel benchmarks, each next to the machine's own limit measured in the "
                    "same run. Benchmarks: " + ", ".join(BENCHMARKS))
    parser.add_argument("--size-mib", type=int, default=1024,
                        help="payload size for upload/download/sha256 (default 1024)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this benchmark (repeatable, or comma-separated)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (payload, stack state and logs)")
    parser.add_argument("--tmp-dir", type=Path, default=None,
                        help="where to create the temp dir (default: the system temp dir)")
    parser.add_argument("--fail-on-miss", action="store_true",
                        help="exit 1 when a target is missed (errors always exit 1)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.size_mib < 1:
        parser.error("--size-mib must be at least 1")
    names = list(BENCHMARKS)
    if args.only:
        wanted = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        names = [n for n in BENCHMARKS if n in wanted]
    args.names = names
    return args


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for bench in BENCHMARKS.values():
            print(f"{bench.name:12} {bench.description}")
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    size = args.size_mib * MIB
    workdir = Path(tempfile.mkdtemp(prefix="satchel-bench-", dir=args.tmp_dir))
    started_at = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    started = time.perf_counter()
    facts = machine_facts(workdir)
    # payload + Satchel's stored copy of it + the stored copies of chunked_upload's further
    # runs (new bytes each) + the one of their payloads on disk at a time + slack; the raw PUT
    # copy is deleted before those exist
    needed = (2 + chunked.BEST_OF) * size + 512 * MIB
    if shutil.disk_usage(workdir).free < needed:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"bench: needs {needed / (1 << 30):.1f} GiB free at {workdir.parent}", file=sys.stderr)
        return 1
    print(format_facts(facts, {"payload": f"{args.size_mib} MiB (os.urandom), benchmarks: "
                                          f"{', '.join(args.names)}"}), flush=True)
    ctx = BenchContext(ROOT, workdir, size)
    rows: list[Row] = []
    interrupted = False
    try:
        for name in args.names:
            log(f"== {name}")
            bench_started = time.perf_counter()
            try:
                new_rows = BENCHMARKS[name].fn(ctx)
            except BenchError as exc:
                new_rows = [Row(name=name, unit="", satchel=None, result="ERROR", notes=[str(exc)])]
            except Exception as exc:  # noqa: BLE001 - report it as a row, show the traceback
                traceback.print_exc()
                new_rows = [Row(name=name, unit="", satchel=None, result="ERROR",
                                notes=[f"{type(exc).__name__}: {exc}"])]
            for row in new_rows:
                row.details.setdefault("bench_seconds", round(time.perf_counter() - bench_started, 2))
                if row.result == "ERROR":
                    tail = ctx.stack_log_tail("file-service")
                    if tail:
                        row.details["file_service_log_tail"] = tail
                    log(f"{name} ERROR: {'; '.join(row.notes)}")
            ctx.results[name] = new_rows
            rows.extend(new_rows)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; cleaning up")
    finally:
        ctx.close(keep=args.keep)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    print(format_table(rows))
    if interrupted:
        print("\nINTERRUPTED: the table holds only the benchmarks that finished")
    print(f"\ntotal {elapsed:.1f}s")
    results_path = ROOT / "var" / "bench" / f"results-{started_at}.json"
    write_json(results_path, {
        "started_at": started_at, "seconds": round(elapsed, 2), "size_mib": args.size_mib,
        "benchmarks": args.names, "interrupted": interrupted, "machine": facts,
        "workdir": str(workdir) if args.keep else None,
        "rows": [row.to_json() for row in rows],
    })
    print(f"results: {results_path}")
    if interrupted or any(row.result == "ERROR" for row in rows):
        return 1
    if args.fail_on_miss and any(row.result == "MISS" for row in rows):
        return 1
    return 0
