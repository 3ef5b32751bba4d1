"""Gunicorn entry point: `gunicorn wsgi:app`."""
import gc

from app import create_app

app = create_app()
# Everything built so far (modules, the app, SQLAlchemy's metadata) lives as long as the
# worker: moved out of the collector's reach, a full collection no longer walks ~100,000
# objects every few hundred requests.
gc.freeze()
