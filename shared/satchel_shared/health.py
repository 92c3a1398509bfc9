"""Liveness (/healthz: the process answers) and readiness (/readyz: its dependencies answer)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from flask import Blueprint, jsonify

log = logging.getLogger(__name__)


def health_blueprint(checks: Mapping[str, Callable[[], object]]) -> Blueprint:
    """`checks` maps a dependency name to a callable that raises when it is unavailable."""
    blueprint = Blueprint("health", __name__)

    @blueprint.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @blueprint.get("/readyz")
    def readyz():
        results = {}
        for name, check in checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # a readiness probe reports, it does not raise
                log.warning("readiness check failed", extra={"check": name, "error": str(exc)})
                results[name] = "unavailable"
        ready = all(result == "ok" for result in results.values())
        return jsonify({"status": "ok" if ready else "unavailable", "checks": results}), (
            200 if ready else 503
        )

    return blueprint
