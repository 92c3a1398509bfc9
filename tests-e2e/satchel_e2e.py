"""What the end-to-end tests share: the test stack's settings and small request helpers."""
import hashlib
import os
from pathlib import Path

from satchel_devstack.stack import StackConfig, free_port

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_ORIGIN = "https://app.example.test"
PASSWORD = "correct-horse-battery-9"
CHUNK_SIZE = 64 * 1024
MAX_UPLOAD = 1024 * 1024
USER_QUOTA = 3 * 1024 * 1024


def stack_config(var_dir: Path, **overrides) -> StackConfig:
    values = dict(
        root=ROOT, var_dir=var_dir,
        gateway_port=free_port(), auth_port=free_port(), file_port=free_port(),
        mongo_port=free_port(), auth_workers=2, file_workers=2,
        auth_rate_limit="3000r/m", auth_rate_burst=100,
        cors_origin_regex=r"^https://app\.example\.test$",
        service_env={"BCRYPT_ROUNDS": "4", "LOGIN_MAX_FAILURES": "5",
                     "LOGIN_MAX_FAILURES_PER_IP": "1000",
                     # small limits, so multi-chunk files and the 413s cost little
                     "CHUNK_SIZE_BYTES": str(CHUNK_SIZE), "MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
                     "USER_QUOTA_BYTES": str(USER_QUOTA)},
    )
    values.update(overrides)
    return StackConfig(**values)


def cli_env(config: StackConfig) -> dict[str, str]:
    """The environment under which `satchel-stack` (the CLI) means the stack `config` is."""
    return {**os.environ, **config.service_env, "SATCHEL_VAR": str(config.var_dir),
            **{name: str(port) for name, port in config.ports.items()},
            "AUTH_WORKERS": str(config.auth_workers), "FILE_WORKERS": str(config.file_workers)}


def upload(api, headers, *files, field="files"):
    """POST /api/v1/files/upload with files given as (filename, bytes[, content type])."""
    parts = [(field, (f[0], f[1], f[2] if len(f) > 2 else "application/octet-stream"))
             for f in files]
    return api.post("/api/v1/files/upload", headers=headers, files=parts)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
