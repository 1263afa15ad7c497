"""`make run`'s launcher on a fresh data directory with the defaults (SQLite, embedded Redis):
web, workers and Redis come up, the demo login works, and Ctrl-C stops all of it."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parent.parent



def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_run_serves_the_demo_login_and_stops_cleanly_on_ctrl_c(tmp_path):
    web_port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(SCRIPTORIUM_DATA_DIR=str(tmp_path / "data"), PORT=str(web_port),
               SCRIPTORIUM_EMBEDDED_REDIS_PORT=str(redis_port), ACCESS_LOG="0")
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "webapp.launcher", "run"], cwd=ROOT, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert launcher.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, log_path.read_text()[-4000:]
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not up yet, or busy starting (health asks the workers, which may be slow to answer)
            time.sleep(1)

        password = re.search(r"Log in as demo / (\S+)", log_path.read_text()).group(1)
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = browser.open(base + "/accounts/login/").read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"username": "demo", "password": password,
                                       "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(base + "/accounts/login/", data=form,
                                         headers={"Referer": base + "/accounts/login/"})
        projects = browser.open(request).read().decode()
        assert "Demo project" in projects
        assert browser.open(base + "/static/vendor/pico.min.css").status == 200

        # A worker killed (say by the OOM killer) is restarted, and the rest keeps running.
        worker = re.search(r"started worker default \(pid (\d+)\)", log_path.read_text())
        os.kill(int(worker.group(1)), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "worker default restarted" not in log_path.read_text():
            assert time.monotonic() < deadline and launcher.poll() is None, log_path.read_text()[-4000:]
            time.sleep(0.5)
        assert "worker default exited with status -9; restarting in 1 s" in log_path.read_text()
        assert browser.open(base + "/projects/").status == 200
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            code = launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            raise
    output = log_path.read_text()
    assert code == 0, output[-4000:]
    assert "[scriptorium] stopped" in output
    assert not _answers(web_port) and not _answers(redis_port)
    leftovers = subprocess.run(["pgrep", "-f", f"--port {redis_port}|--port {web_port}"],
                               capture_output=True, text=True).stdout.split()
    assert leftovers == []


@pytest.mark.slow
def test_run_fails_loudly_and_cleans_up_when_the_web_port_is_taken(tmp_path):
    redis_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env.update(SCRIPTORIUM_DATA_DIR=str(tmp_path / "data"), PORT=str(taken.getsockname()[1]),
                   SCRIPTORIUM_EMBEDDED_REDIS_PORT=str(redis_port), SCRIPTORIUM_RESTART_DELAY_S="0.25")
        result = subprocess.run([sys.executable, "-m", "webapp.launcher", "run"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout[-3000:]
    # Restarted with growing pauses, then given up on: everything stops.
    assert re.search(r"web exited with status \d+; restarting in 0.25 s", result.stdout)
    assert "restarting in 2 s" in result.stdout and "times in 60 s; stopping everything" in result.stdout
    assert "[scriptorium] stopped" in result.stdout
    assert not _answers(redis_port)


def test_one_agents_worker_per_gpu_each_seeing_its_own_device():
    from webapp.launcher import agents_workers, worker_args

    assert agents_workers(0) == [("agents", {})]
    assert agents_workers(2) == [("agents-gpu0", {"CUDA_VISIBLE_DEVICES": "0"}),
                                 ("agents-gpu1", {"CUDA_VISIBLE_DEVICES": "1"})]
    args = worker_args("agents", 8, "agents-gpu1")
    # One process (one model, one serving core) per GPU; its tasks run as threads feeding that core.
    assert args[args.index("-n") + 1] == "agents-gpu1@%h"
    assert args[args.index("--pool") + 1] == "threads" and args[args.index("--concurrency") + 1] == "8"
    assert "solo" in worker_args("training", 1)


def test_a_machine_s_share_needs_the_shared_redis_and_a_known_name(tmp_path):
    """`run --only ...` is one machine of several: it must not start a Redis of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SCRIPTORIUM_PROCESSES")}
    env["SCRIPTORIUM_DATA_DIR"] = str(tmp_path)

    def launch(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "webapp.launcher", "run", *args], cwd=ROOT, env=env | extra,
                              capture_output=True, text=True, timeout=60)

    alone = launch("--only", "agents")
    assert alone.returncode == 2 and "needs REDIS_URL" in alone.stdout
    assert not (tmp_path / "redis").exists()
    unknown = launch("--only", "agents,gpu")
    assert unknown.returncode == 2 and "not 'agents,gpu'" in unknown.stderr
    from_env = launch(SCRIPTORIUM_PROCESSES="web,training")  # the same from the environment
    assert from_env.returncode == 2 and "needs REDIS_URL" in from_env.stdout
