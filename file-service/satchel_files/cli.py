"""Admin commands: `python -m satchel_files.cli fsck [--repair] [--json]`,
`python -m satchel_files.cli gc [--grace-seconds N] [--dry-run]`,
`python -m satchel_files.cli reset-feed`, `python -m satchel_files.cli end-intents` (also as
`flask` commands).

Configuration comes from the same environment as the service (MONGO_URI, STORAGE_BACKEND, ...).
fsck exits 0 when everything is consistent (or was repaired), 1 when problems remain.
"""
from __future__ import annotations

import json
import os
import sys

import click
from flask import current_app, has_app_context


def _app():
    context = click.get_current_context()
    app = (context.obj or {}).get("app")
    if app is None and has_app_context():
        app = current_app
    if app is None:
        from . import create_app
        from .config import Config
        from satchel_shared.config import load_config

        # Admin commands verify no tokens; JWKS_URL is only required to build the web app.
        config = load_config(Config, jwks_url=os.environ.get("JWKS_URL") or "http://unused.invalid/")
        app = create_app(config)
    return app


def _maintenance():
    return _app().extensions["satchel.maintenance"]


@click.command("fsck")
@click.option("--repair", is_flag=True, help="Fix what can be fixed safely.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def fsck_command(repair: bool, as_json: bool) -> None:
    """Recount every reference; report (and with --repair fix) inconsistencies."""
    report = _maintenance().fsck(repair=repair)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        checked = ", ".join(f"{count} {name}" for name, count in report.checked.items())
        click.echo(f"checked {checked}")
        for problem in report.problems:
            state = "fixed" if problem.fixed else "NOT FIXED" if repair else "found"
            click.echo(f"  [{state}] {problem.kind} {problem.id}: {problem.detail}")
        remaining = sum(not problem.fixed for problem in report.problems)
        click.echo("clean" if not report.problems else
                   f"{len(report.problems)} problems, {remaining} remaining")
    sys.exit(0 if report.is_clean else 1)


@click.command("gc")
@click.option("--grace-seconds", type=click.IntRange(min=0), default=None,
              help="Keep anything younger than this (default: GC_GRACE_SECONDS).")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
def gc_command(grace_seconds: int | None, dry_run: bool) -> None:
    """Remove unreferenced blobs, orphans, leftovers and dead requests' intents."""
    report = _maintenance().gc(grace_seconds=grace_seconds, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    details = ", ".join(f"{count} {name}" for name, count in report.removed.items() if count)
    click.echo(f"{verb} {details or 'nothing'} ({report.removed_bytes} bytes)")


@click.command("reset-feed")
def reset_feed_command() -> None:
    """Start a new change feed epoch: every sync client's cursor gets 410 `reset` and the
    client lists its files again. Run it after restoring the database, before the service
    serves anyone (docs/operations.md)."""
    epoch = _app().extensions["satchel.changes"].start_epoch()
    click.echo(f"new change feed epoch {epoch.id}: every cursor issued before it gets 410 reset")


@click.command("end-intents")
def end_intents_command() -> None:
    """After restoring the database, with NO file service running: end the requests that were
    in flight at the snapshot (their reference intents), so fsck --repair can recount."""
    ended = _maintenance().end_all_intents()
    click.echo(f"ended {ended} requests that were in flight at the snapshot")


@click.group()
def cli() -> None:
    """Satchel file service administration."""


cli.add_command(fsck_command)
cli.add_command(gc_command)
cli.add_command(reset_feed_command)
cli.add_command(end_intents_command)


def flask_commands() -> list[click.Command]:
    return [fsck_command, gc_command, reset_feed_command, end_intents_command]


if __name__ == "__main__":
    cli()
