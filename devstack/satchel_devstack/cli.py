"""`satchel-stack run`: the whole stack in the foreground until Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from satchel_shared.config import ConfigError

from .backup import backup, restore
from .stack import Stack, StackConfig, StackError


def run(config: StackConfig) -> int:
    stack = Stack(config)
    stopping = threading.Event()

    def request_stop(signum, _frame):
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print(f"starting Satchel (state in {config.var_dir}) ...", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"satchel-stack: {exc}", file=sys.stderr)
        return 1
    print(
        f"\nSatchel is up.\n"
        f"  gateway        {config.base_url}   (the only address clients need)\n"
        f"  auth-service   http://127.0.0.1:{config.auth_port}\n"
        f"  file-service   http://127.0.0.1:{config.file_port}\n"
        f"  MongoDB (nx-27017 on SQLite)  mongodb://127.0.0.1:{config.mongo_port}\n"
        f"  OpenAPI        {config.base_url}/api/v1/auth/openapi.json  "
        f"{config.base_url}/api/v1/openapi.json\n"
        f"  state          {config.var_dir}  (logs in {config.var_dir / 'log'})\n"
        f"Press Ctrl-C to stop.",
        flush=True,
    )
    status = 0
    while not stopping.wait(1.0):
        dead = stack.dead_process()
        if dead is not None:
            print(f"satchel-stack: {dead.name} exited; see {dead.log_path}\n{dead.log_tail()}",
                  file=sys.stderr)
            status = 1
            break
    print("stopping ...", flush=True)
    stack.stop()
    print("stopped.", flush=True)
    return status


def admin(config: StackConfig, arguments: list[str]) -> int:
    """backup/restore (satchel_devstack.backup), or the file service's admin CLI (fsck, gc)
    against this stack's database and blobs."""
    stack = Stack(config)
    if arguments[:1] in (["backup"], ["restore"]):
        return backup_or_restore(stack, arguments)
    return stack.run_file_admin(*arguments)


def backup_or_restore(stack: Stack, arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"satchel-stack admin {arguments[0]}",
        description="backup: the stack's databases, keys, secrets and blobs into DIR, a new "
                    "directory (the stack may be running). restore: DIR into an empty "
                    "SATCHEL_VAR (the stack stopped), then fsck --repair. docs/operations.md")
    parser.add_argument("directory", metavar="DIR")
    args = parser.parse_args(arguments[1:])
    if not args.directory.strip():
        parser.error("give DIR (make backup DIR=/path/to/new/dir)")
    directory = Path(args.directory)
    try:
        if arguments[0] == "restore":
            status = restore(stack, directory)
            print("restored; start it with `make run`" if status == 0 else
                  "restored, but fsck --repair left problems (above)", flush=True)
            return status
        manifest = backup(stack, directory)
    except StackError as exc:
        print(f"satchel-stack: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {', '.join(manifest['databases'])}, keys, secrets and {manifest['blobs']} "
          f"blobs ({manifest['blob_bytes']} bytes) into {directory} in "
          f"{manifest['seconds']:.1f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="satchel-stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the whole stack in the foreground")
    run_parser.add_argument("--root", type=Path, default=Path.cwd(),
                            help="the Satchel checkout (default: the current directory)")
    admin_parser = sub.add_parser(
        "admin", help="file-service admin commands (fsck, gc; the stack must be running) "
                      "against this stack, e.g. `satchel-stack admin fsck --repair`; and "
                      "`backup DIR`, `restore DIR` (docs/operations.md)")
    admin_parser.add_argument("--root", type=Path, default=Path.cwd())
    admin_parser.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        config = StackConfig.from_env(args.root)
    except ConfigError as exc:  # names every bad variable; nothing has started
        print(f"satchel-stack: {exc}", file=sys.stderr)
        return 1
    if args.command == "admin":
        return admin(config, args.arguments)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
