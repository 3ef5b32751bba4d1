"""Does POST /login's answer time reveal whether a username exists?

Times failed logins for an existing user (wrong password), an unknown user, and a legacy
Werkzeug-hashed user, in-process with the Flask test client on the given database, with the
production Argon2 cost. Prints mean and p50/p90 per case and the gap between them.

    .venv/bin/python bench/bench_login_timing.py [--database-url URL] [--rounds 40]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    from config import normalize_database_url
    admin = create_engine(normalize_database_url(args.database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS ezra_bench_login"))
        conn.execute(text("CREATE DATABASE ezra_bench_login"))
    url = args.database_url.rsplit("/", 1)[0] + "/ezra_bench_login"

    from flask_migrate import upgrade
    from werkzeug.security import generate_password_hash

    from app import create_app
    from database import db
    from models import User
    from password import hash_password
    app = create_app({"DATABASE_URL": url, "JWT_SECRET_KEY": "x" * 48, "TESTING": True,
                      "PIPELINE_ENABLED": False, "JOB_RECOVERY_INTERVAL_SECONDS": 0,
                      "LOGIN_MAX_FAILURES_PER_ACCOUNT": 10**6,
                      "LOGIN_MAX_FAILURES_PER_ADDRESS": 10**6})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.session.add(User(username="real", password_hash=hash_password("secret password")))
        db.session.add(User(username="legacy", password_hash=generate_password_hash(
            "secret password", method="scrypt:32768:8:1")))
        db.session.commit()
    client = app.test_client()
    cases = {"existing user, wrong password": "real", "unknown user": "nobody-here",
             "legacy scrypt user, wrong password": "legacy"}
    results = {}
    for label, username in cases.items():
        client.post("/login", json={"username": username, "password": "warm up"})
        samples = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            response = client.post("/login", json={"username": username, "password": "wrong"})
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 401
        samples.sort()
        results[label] = samples
        print(f"{label:38s} mean {statistics.mean(samples):7.1f} ms  p50 "
              f"{samples[len(samples) // 2]:7.1f} ms  p90 {samples[int(len(samples) * .9)]:7.1f} ms")
    real = statistics.median(results["existing user, wrong password"])
    unknown = statistics.median(results["unknown user"])
    print(f"median gap existing vs unknown: {abs(real - unknown):.1f} ms "
          f"({abs(real - unknown) / real * 100:.1f}% of {real:.1f} ms)")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    with admin.connect() as conn:
        conn.execute(text("DROP DATABASE IF EXISTS ezra_bench_login"))


if __name__ == "__main__":
    main()
