"""Issue 8 (low): gunicorn's request limits are set, and the nginx example in the README caps
each location's body and turns nginx's own refusals into JSON."""
from __future__ import annotations

import json
import re

from conftest import ROOT
from test_deploy import load_gunicorn_conf


def _nginx_blocks() -> str:
    readme = (ROOT / "README.md").read_text()
    return "\n".join(re.findall(r"```nginx\n(.*?)```", readme, flags=re.S))


def test_gunicorn_conf_sets_valid_request_limits_at_or_above_nginx(monkeypatch, tmp_path):
    from gunicorn.config import Config
    settings = load_gunicorn_conf(monkeypatch, tmp_path)
    config = Config()
    for name in ("limit_request_line", "limit_request_fields", "limit_request_field_size"):
        config.set(name, settings[name])  # gunicorn's own validation of each value
    nginx_buffer = 8 * 1024
    assert nginx_buffer - 2 <= config.limit_request_line  # nginx refuses longer lines first
    assert nginx_buffer - 2 <= config.limit_request_field_size
    assert f"large_client_header_buffers 4 {nginx_buffer // 1024}k;" in _nginx_blocks()


def test_nginx_example_caps_each_location_and_answers_json():
    nginx = _nginx_blocks()
    caps = dict(re.findall(r"location = (\S+)\s*\{\s*client_max_body_size (\w+);", nginx))
    assert caps["/login"] == "16k" and caps["/refresh"] == "16k" and caps["/logout"] == "16k"
    assert caps["/process"] == "520m" and caps["/admin/reference-docx"] == "11m"
    assert re.search(r"server_name[^\n]*\n(?:.*\n)*?\s*client_max_body_size 1m;", nginx)
    for codes in ("400 494", "414", "413"):
        assert f"error_page {codes} = @" in nginx
    bodies = re.findall(r"return (\d{3}) '(.*?)';", nginx)
    assert {code for code, _ in bodies} == {"400", "413", "414"}
    for _code, body in bodies:
        assert set(json.loads(body)) == {"error"}
