"""`satchel-stack admin backup DIR` and `admin restore DIR` for the `make run` stack.

Why this order is consistent (docs/operations.md has the whole argument):

1. The databases are snapshotted first, each with SQLite's online backup API in ONE step, so
   each copy is the database as of one instant while nx-27017 goes on writing (WAL: the read
   does not block writers). satchel_files goes first, satchel_auth after it, so every owner
   in the file snapshot is a user in the auth snapshot.
2. The blobs are copied AFTER the file snapshot. A blob a document references at the snapshot
   was stored before the reference was written, and gc deletes it only after its count stayed
   0 for GC_GRACE_SECONDS, all of it after the snapshot: a copy that ends within the grace
   period has it. The backup fails if it took longer.
3. Keys and secrets are copied with their mtimes (the newest key signs).

A restore fills an EMPTY SATCHEL_VAR, then, with only nx-27017 running, ends the requests that
were in flight at the snapshot (their reference intents: no process of theirs survives a
restore), starts a new change feed epoch (`reset-feed`: the restored feed numbers on from the
backup's last change, so every sync client's cursor must get 410 `reset`, before any client can
reach the service) and runs `fsck --repair`, which sets every count from the documents.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path


from satchel_shared.config import ConfigError, load_config

from .stack import Stack, StackError

FORMAT = 1
MANIFEST = "MANIFEST.json"
# What a backup holds, by path under SATCHEL_VAR; the blobs are `data/files/<hh>/<hash>`.
MONGO, KEYS, SECRETS, BLOBS = "mongo", "keys", "secrets", "data/files"


class BackupError(StackError):
    pass


def _file_service_config(stack: Stack):
    """The file service's settings as `make run` gives them (GC_GRACE_SECONDS, MONGO_DB, ...)."""
    from satchel_files.config import Config  # the service's own declaration, not a copy

    try:
        return load_config(Config, stack.service_env())
    except ConfigError as exc:
        raise BackupError(f"the file service's settings: {exc}") from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def snapshot_database(source: Path, target: Path) -> None:
    """`source` as of one instant, into the new file `target` (a single file, no -wal)."""
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=-1)  # one step: one read transaction, a consistent snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # nx-27017 switches it back to WAL
        if dst.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise BackupError(f"the snapshot of {source.name} fails SQLite's quick_check")
    finally:
        dst.close()
        src.close()


def _copy_blobs(source: Path, target: Path) -> tuple[int, int]:
    """Every `<hh>/<hash>` blob file; a blob gc removes meanwhile was unreferenced at the
    snapshot (see above) and is skipped. In-flight bytes (tmp/, staging/) are left out."""
    from satchel_files.storage.local import blob_files

    count = size = 0
    for entry, _ in sorted(blob_files(source), key=lambda found: found[0].name):
        copy = target / entry.name[:2] / entry.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(entry.path, copy)
        except FileNotFoundError:
            continue
        count += 1
        size += copy.stat().st_size
    return count, size


def backup(stack: Stack, target: Path) -> dict:
    """Back up the stack's state (running or not) into `target`, a new or empty directory."""
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; give a new directory")
    mongo = stack.path(MONGO)
    if not any(mongo.glob("*.db")):  # checked before the settings: they may write a secret
        raise BackupError(f"no databases under {mongo}: is SATCHEL_VAR right?")
    config = _file_service_config(stack)
    if config.storage_backend != "local":
        raise BackupError("blobs are in S3 (STORAGE_BACKEND=s3): back up as for compose, "
                          "docs/operations.md")
    first = f"{config.mongo_db}.db"  # the file database before the auth one (see above)
    databases = sorted((p for p in mongo.glob("*.db") if p.is_file()),
                       key=lambda p: (p.name != first, p.name))
    if databases[0].name != first:
        raise BackupError(f"no {first} under {mongo}")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.chmod(0o700)  # keys and secrets inside
    (target / MONGO).mkdir()
    started = time.monotonic()
    manifest: dict = {"format": FORMAT, "started_at": _now(), "databases": {}}
    for database in databases:
        begun = time.time()
        snapshot_database(database, target / MONGO / database.name)
        manifest["databases"][database.stem] = {"snapshot_between": [begun, time.time()]}
    for name in (KEYS, SECRETS):
        if stack.path(name).is_dir():  # copytree keeps modes and mtimes
            shutil.copytree(stack.path(name), target / name)
    count, size = _copy_blobs(stack.path(BLOBS), target / BLOBS)
    elapsed = time.monotonic() - started
    if elapsed >= config.gc_grace_seconds:
        raise BackupError(f"the backup took {elapsed:.0f} s, not less than GC_GRACE_SECONDS "
                          f"({config.gc_grace_seconds}): blobs it needs may have been collected; "
                          f"raise GC_GRACE_SECONDS or back up faster ({target} is "
                          f"incomplete: delete it)")
    manifest.update(finished_at=_now(), seconds=round(elapsed, 3), blobs=count, blob_bytes=size,
                    gc_grace_seconds=config.gc_grace_seconds)
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: complete
    return manifest


def _holds_state(stack: Stack) -> list[str]:
    found = [p for name in (MONGO, KEYS, SECRETS) if stack.path(name).is_dir()
             for p in stack.path(name).iterdir()]
    blobs = stack.path(BLOBS)
    found += [p for p in blobs.iterdir() if p.name != "tmp"] if blobs.is_dir() else []
    return sorted(str(p.relative_to(stack.config.var_dir)) for p in found)


def restore(stack: Stack, source: Path) -> int:
    """Restore `source` into the stack's empty SATCHEL_VAR and repair it; fsck's exit status."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} is not a complete backup (no readable {MANIFEST}: {exc})")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: unknown backup format {manifest.get('format')!r}")
    state = _holds_state(stack)
    if state:
        raise BackupError(f"{stack.config.var_dir} already holds a Satchel "
                          f"({', '.join(state[:3])}{', ...' if len(state) > 3 else ''}); "
                          f"restore into a new SATCHEL_VAR, or move this one away first")
    stack.check_ports()  # refuses while the stack (or anything on its ports) runs
    marker = stack.restoring_marker
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"restoring {source}\n")  # Stack.prepare refuses while it is there
    for name in (MONGO, KEYS, SECRETS, BLOBS):
        if (source / name).is_dir():  # modes and mtimes kept: the newest key signs
            shutil.copytree(source / name, stack.path(name), dirs_exist_ok=True)
    for name in (MONGO, "log", "run"):  # what nx-27017 alone needs
        stack.path(name).mkdir(parents=True, exist_ok=True)
    try:
        stack.start_database()
        print(f"restored the backup of {manifest['started_at']}", flush=True)
        if stack.run_file_admin("end-intents") != 0:  # no file service runs now
            raise BackupError(f"could not end the requests in flight at the snapshot (above); "
                              f"move {stack.config.var_dir} away and restore again")
        if stack.run_file_admin("reset-feed") != 0:
            raise BackupError(f"could not start a new change feed epoch (above): sync clients "
                              f"could miss changes; move {stack.config.var_dir} away and "
                              f"restore again")
        print("fsck --repair:", flush=True)
        status = stack.run_file_admin("fsck", "--repair")
    finally:
        stack.stop()
    marker.unlink()  # only now: a restore cut short leaves the old feed epoch behind
    return status

