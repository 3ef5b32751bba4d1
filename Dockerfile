# Slim image: gunicorn serving wsgi:app as a non-root user. ffmpeg and pandoc come from
# PyPI wheels (imageio-ffmpeg, pypandoc-binary), so no system packages are needed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    EZRA_ENV=production STORAGE_DIR=/data/storage

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt && useradd --create-home --uid 10001 ezra \
    && mkdir -p /data/storage && chown -R ezra /data
COPY --chown=ezra . .

USER ezra
EXPOSE 8000
# Run `flask --app app db upgrade` once per release (e.g. a one-off container) before this.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "--bind", "0.0.0.0:8000", "wsgi:app"]
