"""Real parts, started once per session: a Prefect API server, a two-node Ray cluster, an S3 API on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The test cluster listens on loopback only; token auth would need the token file shared with it.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from flows.local_api import free_port  # noqa: E402
from tasks.demo.corpus import build_demo_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUCKET = "mmetl-test"


@pytest.fixture(scope="session")
def demo_manifest(tmp_path_factory) -> str:
    """The demo corpus, made once: its captions.jsonl path."""
    return build_demo_corpus(str(tmp_path_factory.mktemp("demo-source")))


@pytest.fixture(scope="session")
def demo_recipe(tmp_path_factory, demo_manifest) -> str:
    """recipes/demo.yaml, pointed at the session's corpus."""
    text = (REPO / "recipes" / "demo.yaml").read_text()
    text = text.replace("data/sources/demo/captions.jsonl", demo_manifest).replace(
        "synthesize_demo: true", "synthesize_demo: false"
    )
    assert demo_manifest in text
    path = tmp_path_factory.mktemp("recipe") / "demo.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 API server on loopback; s3fs and boto3 reach it through the usual AWS_* settings."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield f"s3://{BUCKET}"
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API server (a subprocess), shared by the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on loopback (`ray start` twice, one CPU each), as an operator
    would run one; flows reach it through MMETL_RAY_ADDRESS, tests read its state API."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    port, dashboard_port = free_port(), free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    subprocess.run(
        [
            ray,
            "start",
            "--head",
            f"--port={port}",
            "--include-dashboard=true",
            f"--dashboard-port={dashboard_port}",
            *common,
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *common], check=True, capture_output=True)
    os.environ["MMETL_RAY_ADDRESS"] = f"127.0.0.1:{port}"
    yield {"address": os.environ["MMETL_RAY_ADDRESS"], "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    os.environ.pop("MMETL_RAY_ADDRESS", None)
    stop_ray_cluster(port)


def stop_ray_cluster(port: int) -> None:
    """Stop this cluster's processes only. `ray stop` would kill every Ray process on the machine:
    another test run's, a build's, a developer's own cluster."""
    import psutil

    def of_this_cluster(args: list[str]) -> bool:  # its GCS server, and what points at its address
        return any(arg == f"--gcs_server_port={port}" or arg.endswith(f":{port}") for arg in args)

    ours = {p for p in psutil.process_iter(["cmdline"]) if of_this_cluster(p.info["cmdline"] or [])}
    for process in list(ours):  # the raylet's agents and workers rename themselves (ray::...)
        try:
            ours.update(process.children(recursive=True))
        except psutil.Error:
            pass
    for process in ours:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(ours), timeout=15)
    for process in alive:
        process.kill()


@pytest.fixture
def web():
    """A real HTTP server on loopback (tests/web.py), closed after the test."""
    from .web import WebServer

    server = WebServer()
    yield server
    server.close()
