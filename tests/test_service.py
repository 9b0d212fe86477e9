"""Operating it as a service, the way a user does, with real parts: sources that drop one folder a
day, `mmetl backfill` killed midway and run again, `mmetl status` / `inspect`, `mmetl serve`, and the
deployments of deployments/prefect.yaml run by a real `prefect worker` against a real `prefect server`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.local_api import free_port, start_server, stop_server, wait_healthy

from .helpers import image_bytes
from .test_cli import MMETL, cli_env, kill_session

pytestmark = pytest.mark.e2e  # Prefect servers, Ray clusters, mmetl processes

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")
DROPS = {"2026-01-01": range(0, 5), "2026-01-02": range(10, 15), "2026-01-04": range(20, 25)}  # none on the 3rd


def daily_drops(folder: Path) -> Path:
    """A source that lands one folder a day (`drops/<date>/captions.jsonl` and its images), and its recipe."""
    for day, seeds in DROPS.items():
        (folder / "drops" / day).mkdir(parents=True)
        rows = []
        for seed in seeds:
            (folder / "drops" / day / f"img{seed}.jpg").write_bytes(image_bytes((96, 72), seed=seed))
            rows.append({"media": f"img{seed}.jpg", "modality": "image", "text": f"picture {seed} of some shapes"})
        (folder / "drops" / day / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    recipe = folder / "daily.yaml"
    recipe.write_text(
        f"name: daily\nsource:\n  name: drops\n  kind: manifest\n  uri: {folder}/drops/{{partition}}/captions.jsonl\n"
    )
    return recipe


def published_items(root: Path, partition: str) -> list[str]:
    version = root / "daily" / "versions" / partition
    manifest = json.loads((version / "manifest.json").read_text())
    return [
        row["source_uri"].rsplit("/", 1)[-1]
        for split in manifest["splits"].values()
        for row in pq.read_table(version / split["index"]).to_pylist()
    ]


def test_backfill_builds_each_days_drop_once_and_resumes_after_a_kill(tmp_path):
    recipe, root = daily_drops(tmp_path), tmp_path / "out"
    env = cli_env(tmp_path, str(root))
    command = [MMETL, "backfill", str(recipe), "--start", "2026-01-01", "--end", "2026-01-04", "--concurrency", "1"]
    with open(tmp_path / "first.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    first = root / "daily" / "versions" / "2026-01-01" / "manifest.json"
    deadline = time.monotonic() + 300
    while not (first.exists() and list((root / "daily" / "runs").glob("2026-01-02--*.json"))):
        assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the second partition never started"
        time.sleep(0.2)
    kill_session(process)  # the first published, the second under way
    assert not (root / "daily" / "versions" / "2026-01-04" / "manifest.json").exists()

    again = subprocess.run(command[:-1] + ["2"], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    table = {line.split()[0]: line for line in again.stdout.splitlines() if line.startswith("2026-01-0")}
    assert "already published" in table["2026-01-01"]
    assert "nothing to build" in table["2026-01-03"] and "no source has a drop" in table["2026-01-03"]
    for day in ("2026-01-02", "2026-01-04"):
        assert table[day].split()[1] == "published" and table[day].split()[2] == "5"
    for day, seeds in DROPS.items():  # every day's drop once, nothing of another day's
        assert sorted(published_items(root, day)) == sorted(f"img{s}.jpg" for s in seeds)
    assert not (root / "daily" / "versions" / "2026-01-03").exists()

    status = subprocess.run(
        [MMETL, "status", str(recipe), "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    listed = json.loads(status.stdout)
    assert [v["partition"] for v in listed["versions"]] == ["2026-01-04", "2026-01-02", "2026-01-01"]
    assert all(sum(v["samples"].values()) == 5 and v["rejected"] == 0 for v in listed["versions"])
    states = {(run["partition"], run["state"]) for run in listed["runs"]}
    # the killed run of the 2nd stays "running" in its record; every other run says how it ended
    assert {("2026-01-02", "running"), ("2026-01-03", "nothing to build"), ("2026-01-01", "published")} <= states
    assert ("2026-01-01", "already published") in states and ("2026-01-02", "published") in states

    inspect = subprocess.run(
        [MMETL, "inspect", "daily/2026-01-02", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert inspect.returncode == 0, inspect.stderr
    described = json.loads(inspect.stdout)
    assert (described["manifest"]["samples"], described["manifest"]["texts"], described["manifest"]["rejected"]) == (
        5,
        5,
        0,
    )
    assert described["modalities"] == {"image": 5} and described["manifest"]["code"]["stage_code_sha256"]
    shown = {s["source_uri"].rsplit("/", 1)[-1]: [t["text"] for t in s["texts"]] for s in described["samples"]}
    assert len(shown) == 3 and all(texts == [f"picture {n[3:-4]} of some shapes"] for n, texts in shown.items())
    text = subprocess.run([MMETL, "inspect", "daily/2026-01-02"], env=env, capture_output=True, text=True, timeout=60)
    assert text.stdout.startswith("daily 2026-01-02: 5 items, 5 texts, 0 rejected")  # and for people, the same


def test_a_backfill_refuses_a_reversed_range_and_a_date_format_for_a_named_partition(tmp_path):
    recipe, root = daily_drops(tmp_path), tmp_path / "out"
    env = cli_env(tmp_path, str(root))
    reversed_range = subprocess.run(
        [MMETL, "backfill", str(recipe), "--start", "2026-01-04", "--end", "2026-01-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reversed_range.returncode == 2 and "is before --start" in reversed_range.stderr
    recipe.write_text(recipe.read_text().replace("{partition}", "{partition:%Y/%m/%d}"))
    named = subprocess.run(
        [MMETL, "build", str(recipe), "--partition", "nightly"], env=env, capture_output=True, text=True, timeout=60
    )
    assert named.returncode == 2 and "'nightly' is not one (YYYY-MM-DD)" in named.stderr


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` on loopback, as an operator runs it; the URL of its API."""
    home, port = tmp_path_factory.mktemp("prefect-server"), free_port()
    process = start_server(home, port, home / "server.log")
    url = f"http://127.0.0.1:{port}/api"
    wait_healthy(url, process)
    yield url
    stop_server(process)


def prefect_env(tmp_path: Path, api_url: str, root: Path) -> dict[str, str]:
    env = cli_env(tmp_path, str(root))
    env.update(PREFECT_API_URL=api_url, MMETL_CHECKOUT=str(REPO), PREFECT_HOME=str(tmp_path / "client-home"))
    return env


def prefect(env: dict, *args: str, timeout: float = 120) -> str:
    result = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def api(url: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def run_and_watch(env: dict, deployment: str, *params: str) -> str:
    """`prefect deployment run ... --watch`: returns once the run has ended; fails unless it Completed."""
    args = [arg for param in params for arg in ("--param", param)]
    out = prefect(env, "deployment", "run", deployment, *args, "--watch", "--watch-timeout", "400", timeout=450)
    assert "Completed" in out, out[-3000:]
    return out


def test_a_worker_runs_the_deployed_nightly_and_the_backfill(tmp_path, prefect_server):
    recipe, root = daily_drops(tmp_path), tmp_path / "out"
    env = prefect_env(tmp_path, prefect_server, root)
    prefect(env, "work-pool", "create", "mmetl", "--type", "process")
    prefect(env, "--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--all")
    listed = prefect(env, "deployment", "ls")
    assert all(
        name in listed for name in ("build-dataset/demo-nightly", "build-dataset/starter-nightly", "backfill/backfill")
    )
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "mmetl"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        run_and_watch(env, "build-dataset/demo-nightly", f"recipe_path={recipe}", "partition=2026-01-02")
        assert sorted(published_items(root, "2026-01-02")) == [f"img{s}.jpg" for s in range(10, 15)]
        # the version names the flow run that published it: the deployment's, and it Completed
        manifest = json.loads((root / "daily" / "versions" / "2026-01-02" / "manifest.json").read_text())
        run = api(prefect_server, "GET", f"/flow_runs/{manifest['prefect_flow_run_id']}")
        deployment = api(prefect_server, "GET", "/deployments/name/build-dataset/demo-nightly")
        assert run["deployment_id"] == deployment["id"] and run["state"]["type"] == "COMPLETED"
        assert run["parameters"]["partition"] == "2026-01-02"
        run_and_watch(env, "backfill/backfill", f"recipe_path={recipe}", "start=2026-01-01", "end=2026-01-03")
        assert sorted(published_items(root, "2026-01-01")) == [f"img{s}.jpg" for s in range(0, 5)]
        assert not (root / "daily" / "versions" / "2026-01-03").exists()
    finally:
        kill_session(worker)


def test_serve_schedules_the_nightly_and_runs_it_when_triggered(tmp_path, prefect_server):
    recipe, root = daily_drops(tmp_path), tmp_path / "out"
    env = prefect_env(tmp_path, prefect_server, root)
    with open(tmp_path / "serve.log", "wb") as log:
        serving = subprocess.Popen(
            [MMETL, "serve", str(recipe), "--cron", "0 2 * * *"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "daily-nightly" not in prefect(env, "deployment", "ls"):
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "serve never registered its deployment"
            time.sleep(1)
        schedule = prefect(env, "deployment", "inspect", "build-dataset/daily-nightly")
        assert "0 2 * * *" in schedule
        run_and_watch(env, "build-dataset/daily-nightly", "partition=2026-01-04")
        assert sorted(published_items(root, "2026-01-04")) == [f"img{s}.jpg" for s in range(20, 25)]
    finally:
        kill_session(serving)


def test_a_local_servers_port_is_one_neither_the_os_nor_ray_hands_out():
    """The Prefect server binds its port seconds after it is chosen, while Ray starts: a port from the
    OS's ephemeral range (or Ray's worker range) could be taken in between, as Ray's dashboard agent
    once took 52365 and the build never ran."""
    from flows.local_api import FIRST_FREE_PORT, ephemeral_ports

    low, _ = ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert all(FIRST_FREE_PORT <= port < low for port in ports), ports
    assert 52365 not in ports and len(set(ports)) > 1
