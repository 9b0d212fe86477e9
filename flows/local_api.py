"""A local Prefect API for one command: start `prefect server start`, point everything at it, stop it.

Used when PREFECT_API_URL is not set. The server keeps its database under <data>/prefect, so
`mmetl ui` shows the history of every local run. This module must not import prefect: the
settings have to be in the environment before prefect reads them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# Ports below this are Ray's (its workers take 10002-19999 by default) or well known.
FIRST_FREE_PORT = 20000


def free_port() -> int:
    """A free loopback port for a server this command starts, taken below the range the OS hands out
    for port 0. The server binds it seconds later (Prefect imports first), while Ray starts and binds
    ports of its own: a port 0 gave us could be Ray's dashboard agent's default (52365) or go to one of
    its processes in between (seen: the server exited with "address already in use", no build ran)."""
    top = ephemeral_ports()[0]
    if top - FIRST_FREE_PORT >= 1000:
        for port in random.sample(range(FIRST_FREE_PORT, top), 50):
            with socket.socket() as s, contextlib.suppress(OSError):
                s.bind(("127.0.0.1", port))
                return port
    with socket.socket() as s:  # an unusual ephemeral range: any free port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ephemeral_ports() -> tuple[int, int]:
    """The range the OS picks from for port 0 (Linux; elsewhere IANA's, as macOS uses)."""
    with contextlib.suppress(OSError, ValueError):
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    return 49152, 65535


def start_server(prefect_home: Path, port: int, log_path: Path | None = None) -> subprocess.Popen:
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # the UI's JavaScript calls the API at PREFECT_UI_API_URL, which otherwise assumes port 4200
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the command that started it is killed (no orphaned servers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode} before it was healthy")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server at {url} was not healthy after {timeout_s:.0f}s")


@contextlib.contextmanager
def prefect_api(prefect_home: Path, while_starting=None):
    """Yield the API URL in use: the configured one, or a server started here for the duration.

    `while_starting(url)` runs while the server boots (it takes seconds), with the environment
    already pointing at it: a caller starts its other parts (Ray) meanwhile.
    """
    if os.environ.get("PREFECT_API_URL"):
        if while_starting:
            while_starting(os.environ["PREFECT_API_URL"])
        yield os.environ["PREFECT_API_URL"]
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    process = start_server(prefect_home, port, prefect_home / "server.log")
    try:
        os.environ.update(PREFECT_API_URL=url, PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        if while_starting:
            while_starting(url)
        wait_healthy(url, process)
        yield url
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server and the workers it started (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
