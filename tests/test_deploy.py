"""Deployment files: docker-compose.yml (no Docker engine here to run it) and gunicorn.conf.py
name only settings the code knows, so a typo cannot hide there."""
from __future__ import annotations

import configparser
import re

import yaml

import config
from conftest import ROOT

APP_SERVICES = ("web", "worker")  # the services running this code (same image, same variables)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def readme_variables() -> set[str]:
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))


def test_compose_environment_names_are_configuration_variables():
    services = compose()["services"]
    assert {"db", "redis", "web", "worker", "nginx"} <= set(services)
    assert services["web"]["environment"]["EXECUTOR_MAX_WORKERS"] == "0"
    assert services["worker"]["command"] == ["flask", "--app", "app", "worker"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        unknown = set(environment) - set(config._VARIABLES)
        assert not unknown, f"{name}: not in config.py: {sorted(unknown)}"
        # What production refuses to start without.
        assert {"EZRA_ENV", "DATABASE_URL", "JWT_SECRET_KEY"} <= set(environment)
        assert environment["EZRA_ENV"] == "production"


def test_compose_secrets_come_from_env_file_placeholders():
    text = (ROOT / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert referenced <= example, sorted(referenced - example)


def test_compose_mounts_its_files_and_shares_storage():
    services = compose()["services"]
    for volume in services["nginx"]["volumes"]:
        source = volume.split(":")[0]
        assert (ROOT / source).exists(), source
    for name in APP_SERVICES:
        assert any(v.endswith(":/data/storage") for v in services[name]["volumes"])
        assert services[name]["environment"]["STORAGE_DIR"] == "/data/storage"


def test_every_configuration_variable_is_in_the_readme_table():
    missing = set(config._VARIABLES) - readme_variables()
    assert not missing, f"add to README's configuration table: {sorted(missing)}"


def load_gunicorn_conf(monkeypatch, tmp_path) -> dict:
    # Set, so loading the file does not switch this test process to multiprocess metrics.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    namespace: dict = {}
    exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)
    return namespace


def test_gunicorn_conf_loads_and_keeps_the_documented_settings(monkeypatch, tmp_path):
    namespace = load_gunicorn_conf(monkeypatch, tmp_path)
    assert namespace["workers"] == 3 and namespace["threads"] == 4
    assert namespace["timeout"] == 120
    assert namespace["max_requests"] == 2000 and namespace["max_requests_jitter"] == 200
    assert not namespace.get("preload_app")  # each worker starts its own job runners


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "deploy" / name)
    return parser


def test_systemd_units_run_web_and_workers_apart():
    web, worker = unit("ezra-web.service"), unit("ezra-worker@.service")
    for parser in (web, worker):
        for line in parser["Service"]["Environment"].split("\n"):
            name = line.split("=", 1)[0]
            assert name in config._VARIABLES, name
    assert web["Service"]["Environment"] == "EXECUTOR_MAX_WORKERS=0"
    assert "gunicorn -c gunicorn.conf.py wsgi:app" in web["Service"]["ExecStart"]
    assert "flask --app app worker" in worker["Service"]["ExecStart"]
    assert worker["Service"]["KillSignal"] == "SIGTERM"


def test_a_worker_that_will_restart_claims_no_more_jobs(monkeypatch, tmp_path):
    """gunicorn's post_request hook: once the worker has decided to restart (max_requests) or
    stop, its runner drains before the worker's other requests finish and 'Worker exiting' is
    logged; a worker that goes on serving keeps claiming."""
    import jobs
    post_request = load_gunicorn_conf(monkeypatch, tmp_path)["post_request"]

    class Worker:
        alive = True

    try:
        post_request(Worker(), None, {}, None)
        assert not jobs._draining.is_set()
        Worker.alive = False
        post_request(Worker(), None, {}, None)
        assert jobs._draining.is_set()
    finally:
        jobs._draining.clear()  # this test process goes on running jobs in other tests
