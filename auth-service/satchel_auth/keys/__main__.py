"""python -m satchel_auth.keys generate --dir DIR [--force]"""
from __future__ import annotations

import argparse
import sys

from satchel_shared.config import ConfigError

from . import __doc__ as KEYS_DOC
from . import generate_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m satchel_auth.keys", description=KEYS_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate", help="create a signing key if DIR has none; print the active kid")
    generate.add_argument("--dir", required=True, help="the JWT_KEYS_DIR")
    generate.add_argument("--force", action="store_true",
                          help="add a new key even if DIR has some (rotation); it becomes the newest")
    args = parser.parse_args(argv)
    try:
        kid, created = generate_key(args.dir, force=args.force)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(kid)
    if not created:
        print(f"{args.dir} already has keys; nothing created (use --force to rotate)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
