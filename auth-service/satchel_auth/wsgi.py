"""gunicorn entry point: `gunicorn satchel_auth.wsgi:app` (one app per worker, after fork)."""
from . import create_app

app = create_app()
