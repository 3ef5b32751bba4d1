#!/usr/bin/env bash
# Install everything into .venv, make sure PostgreSQL (and Redis, for the Celery tests) are up,
# run the tests: the default tier, or the slow one with `-m slow` (pytest.ini).
# TEST_DATABASE_URL picks the server (default: the local `test` database, trust auth).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "Starting PostgreSQL..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break
    sleep 1
  done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432"; exit 1; }

# tests/test_celery.py needs a Redis on 127.0.0.1:6379 (it uses db 10): start one if none answers.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "Starting Redis..."
    redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no --daemonize yes
  else
    echo "No Redis on 127.0.0.1:6379 and no redis-server to start (apt-get install redis-server)"
    exit 1
  fi
fi

# tests/test_web_page.py drives the page at / in Debian's Chromium (through the `playwright`
# package, which downloads no browser of its own): install it when missing and we are root.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing chromium for the browser test..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
    >/tmp/ezra-chromium-install.log 2>&1 \
    || echo "Could not install chromium (see /tmp/ezra-chromium-install.log); the browser test will be skipped"
fi

exec .venv/bin/pytest -q -p no:cacheprovider "$@"
