"""Offline at once when the hub cannot be reached, in a fresh process (the libraries read the
variable at import, so only a new process shows what the user gets)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.conftest import REPO

PROBE = ("import os, sys; from arzan.hub import offline_if_unreachable; note = offline_if_unreachable(); "
         "import huggingface_hub.constants as c; print(repr(note)); print(os.environ.get('HF_HUB_OFFLINE')); "
         "print(c.HF_HUB_OFFLINE)")


def _probe(**env):
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")
            and k.lower() not in ("https_proxy", "http_proxy", "all_proxy")}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                          env={**base, "PYTHONPATH": str(REPO / "src"), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _closed_port() -> int:
    with socket.socket() as s:  # bound and closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_hub_switches_the_libraries_offline_with_a_note():
    note, env, constant = _probe(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    assert "127.0.0.1 cannot be reached" in note and "working offline from the Hugging Face cache" in note
    assert (env, constant) == ("1", "True")


def test_a_reachable_hub_or_the_users_own_choice_is_left_alone():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        note, env, constant = _probe(HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}")
    assert (note, env, constant) == ("None", "None", "False")
    note, env, _ = _probe(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HUB_OFFLINE="0")
    assert (note, env) == ("None", "0")  # the user said: try the network anyway


def test_behind_a_proxy_the_probe_proves_nothing_and_is_skipped():
    """A university network that lets only its proxy out: a direct connect fails while the libraries,
    which go through HTTPS_PROXY, would reach the hub."""
    note, env, _ = _probe(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HTTPS_PROXY="http://127.0.0.1:3128")
    assert (note, env) == ("None", "None")


def test_the_offline_note_comes_with_an_error_about_the_hub_not_with_every_error(tmp_path):
    """It preceded every error, an empty recipe file's too; now only the ones it explains."""
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    (tmp_path / "hub.yaml").write_text("name: x\nmodel:\n  name: arzan-test-no-such-org/not-cached\ndata:\n  sources:\n"
                                       f"    - path: {tmp_path / 'rows.jsonl'}\n      format: alpaca\n", encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")
            and k.lower() not in ("https_proxy", "http_proxy", "all_proxy")}
    env = {**base, "PYTHONPATH": str(REPO / "src"), "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}

    def arzan(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "arzan", *args], capture_output=True, text=True, timeout=300,
                              env=env, cwd=tmp_path)

    empty = arzan("estimate", "empty.yaml")
    assert empty.returncode == 2 and "cannot be reached" not in empty.stderr
    assert empty.stderr.strip().splitlines() == [empty.stderr.strip()] and "the file is empty" in empty.stderr
    hub = arzan("estimate", "hub.yaml")
    lines = hub.stderr.strip().splitlines()
    assert hub.returncode == 2 and "cannot be reached" in lines[0] and lines[-1].startswith("error: hub.yaml: model.name")
