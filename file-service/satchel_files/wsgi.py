"""gunicorn entry point: `gunicorn satchel_files.wsgi:app`."""
from . import create_app

app = create_app()
