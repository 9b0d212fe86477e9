"""The `mmetl` command as a user runs it: it starts its own Prefect API and its own local Ray.

Also the crash story: a build killed mid-run (SIGKILL, no cleanup) is rerun and publishes exactly
what an uninterrupted build publishes, with no duplicates and no gaps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tasks.core import storage
from tasks.fetch.cache import fetch_cache

from .helpers import image_bytes, tree_digest
from .web import WebServer

pytestmark = pytest.mark.e2e  # Prefect servers, Ray clusters, mmetl processes

PARTITION = "2026-11-02"
MMETL = str(Path(sys.executable).parent / "mmetl")


def cli_env(tmp_path: Path, root: str) -> dict[str, str]:
    """The environment of a fresh shell: no Prefect API and no Ray cluster configured."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_API", "MMETL_", "RAY_ADDRESS", "RAY_AUTH_MODE", "AWS_"))
    }
    env.update(MMETL_STORAGE=root, MMETL_PREFECT_HOME=str(tmp_path / "prefect-home"))
    return env


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the build and every process it started (Ray's too), and wait until none is left: a
    write a worker had begun can still land after the signal."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 30
    while alive := _alive_in_session(process.pid):
        assert time.monotonic() < deadline, f"processes of the killed build still alive: {alive}"
        time.sleep(0.05)


def _alive_in_session(session: int) -> list[int]:
    alive = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == session and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p.pid)
        except (OSError, psutil.Error):  # gone meanwhile
            pass
    return alive


def test_bad_recipe_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nsource: {name: demo, kind: manifest, uri: x.jsonl}\nfilter: {min_image_sid: 3}\n")
    result = subprocess.run([MMETL, "build", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "filter.min_image_sid: Extra inputs are not permitted" in result.stderr


def test_missing_source_exits_2_before_starting_anything(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: demo\nsource: {{name: demo, kind: manifest, uri: {tmp_path}/none.jsonl}}\n")
    result = subprocess.run(
        [MMETL, "build", str(recipe)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(tmp_path, str(tmp_path / "data")),
    )
    assert result.returncode == 2 and f"{tmp_path}/none.jsonl does not exist" in result.stderr
    assert not (tmp_path / "prefect-home").exists()


@pytest.fixture(scope="module")
def dry_then_built(tmp_path_factory, demo_recipe) -> dict:
    """`mmetl build --dry-run`, then `mmetl build`, of the demo in one fresh shell's environment."""
    folder = tmp_path_factory.mktemp("dry-then-built")
    root = str(folder / "out")
    env = cli_env(folder, root)
    runs = {}
    for name, extra in (("dry", ["--dry-run"]), ("built", [])):
        runs[name] = subprocess.run(
            [MMETL, "build", demo_recipe, "--partition", PARTITION, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert runs[name].returncode == 0, runs[name].stdout[-3000:] + runs[name].stderr[-3000:]
        if name == "dry":
            assert not (Path(root) / "demo" / "versions" / PARTITION / "manifest.json").exists()
    return {"env": env, "root": root, **runs}


def test_dry_run_reports_what_each_filter_would_drop_publishes_nothing_and_the_build_agrees(dry_then_built):
    dry, built = dry_then_built["dry"], dry_then_built["built"]
    assert "Dry run: nothing was published." in dry.stdout
    for run in (dry, built):  # a Ray of our own on loopback: none of Ray's notices on the terminal
        assert "WARNING" not in run.stdout + run.stderr and "Token authentication" not in run.stdout + run.stderr
    predicted = dict(re.findall(r"^  demo +((?:filter|align):\w+) +(\d+) +\d+$", dry.stdout, re.M))
    keeps = re.search(r"With every rule, demo keeps (\d+) of (\d+) items", dry.stdout)
    assert keeps and re.search(r"^  image pixel_std .+ n=\d+$", dry.stdout, re.M)  # a histogram per score

    lines = {
        line.split()[0]: line.split() for line in built.stdout.splitlines() if line.startswith(("filter ", "align "))
    }
    n_in, n_kept = lines["filter"][1], lines["align"][2]  # the dry run judges by the filter's and align's rules
    reasons = lines["filter"][4:] + lines["align"][4:]
    assert (n_kept, n_in) == keeps.groups()  # every demo item fails at most one rule: the counts add up
    assert {k: v for k, v in (r.rstrip(",").split("=") for r in reasons) if int(predicted.get(k, 0))} == {
        k: v for k, v in predicted.items() if int(v)
    }


def test_status_and_inspect_json_describe_the_published_version(dry_then_built):
    env, root = dry_then_built["env"], dry_then_built["root"]
    status = json.loads(subprocess.check_output([MMETL, "status", "--json"], env=env, timeout=60))
    (version,) = status["versions"]
    manifest = json.loads((Path(root) / "demo" / "versions" / PARTITION / "manifest.json").read_text())
    assert (version["dataset"], version["partition"], version["rejected"]) == ("demo", PARTITION, manifest["rejected"])
    assert version["samples"] == {name: s["samples"] for name, s in manifest["splits"].items()}
    assert [run["state"] for run in status["runs"]] == ["published", "dry run"]  # newest first
    inspected = json.loads(
        subprocess.check_output(
            [MMETL, "inspect", f"demo/{PARTITION}", "--json", "--samples", "5"], env=env, timeout=60
        )
    )
    assert inspected["manifest"] == manifest and len(inspected["samples"]) == 5
    assert sum(inspected["modalities"].values()) == manifest["samples"]
    assert (
        inspected["stats"]["rejects_by_reason"]
        and sum(inspected["stats"]["rejects_by_reason"].values()) == (manifest["rejected"])
    )


def test_killed_build_resumes_to_the_same_version(tmp_path, demo_recipe):
    reference_root, killed_root = str(tmp_path / "reference"), str(tmp_path / "killed")

    done = subprocess.run(
        [MMETL, "build", demo_recipe, "--partition", PARTITION],
        env=cli_env(tmp_path / "a", reference_root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Prefect API: http://127.0.0.1:" in done.stdout and "Published " in done.stdout
    assert "Version: " + str(Path(reference_root) / "demo" / "versions" / PARTITION) in done.stdout

    # kill a second build once a few collect-clean shards are committed, before anything is published
    env = cli_env(tmp_path / "b", killed_root)
    process = subprocess.Popen(
        [MMETL, "build", demo_recipe, "--partition", PARTITION],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    work = Path(killed_root) / "demo" / "work" / PARTITION
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(work.glob("*/collect-clean/shard-*.json"))) < 2:
        time.sleep(0.05)
    kill_session(process)
    committed = len(list(work.glob("*/collect-clean/shard-*.json")))
    assert 2 <= committed < 6, "the kill must land mid-step"
    version = Path(killed_root) / "demo" / "versions" / PARTITION
    assert not (version / "manifest.json").exists()

    resumed = subprocess.run(
        [MMETL, "build", demo_recipe, "--partition", PARTITION], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    reference = storage.join(reference_root, "demo", "versions", PARTITION)
    assert tree_digest(str(version)) == tree_digest(reference)


def test_killed_url_list_build_fetches_nothing_twice_and_misses_nothing(tmp_path):
    """Downloads are the expensive, rate-limited part of a URL-list build: a rerun after a kill must
    ask no server again for what it already stored, and still publish every image."""
    web = WebServer()
    try:
        good = [
            web.add(f"/img/{i}.jpg", body=image_bytes(size=(96, 64), seed=i), content_type="image/jpeg", delay_s=0.15)
            for i in range(160)
        ]
        gone = [f"{web.url}/gone/{i}.jpg" for i in range(8)]
        listing = tmp_path / "list.jsonl"
        listing.write_text(
            "".join(json.dumps({"url": u, "caption": f"picture number {i}"}) + "\n" for i, u in enumerate(good + gone))
        )
        recipe = tmp_path / "web.yaml"
        recipe.write_text(
            f"name: web\nsources: [{{name: web, kind: urls, uri: {listing}}}]\n"
            "network: {allow_hosts: [127.0.0.1], per_host: 2, timeout_s: 5, subtitles: []}\n"
            "shards: {max_items: 24}\n"
            "dedupe: {image_radius: null}\n"
        )  # generated shapes; this test is about downloads
        root = tmp_path / "data"
        env = cli_env(tmp_path, str(root))
        command = [MMETL, "build", str(recipe), "--partition", PARTITION]
        log = tmp_path / "killed.log"
        with open(log, "w") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        cache = root / "web" / "work" / PARTITION
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and len(stored_downloads(cache)) < 40:
            time.sleep(0.2)
        assert process.poll() is None, f"the build ended before the kill:\n{log.read_text()[-3000:]}"
        kill_session(process)
        stored = stored_downloads(cache)
        assert 40 <= len(stored) < len(good), "the kill must land mid-download"
        before = Counter(web.hits)

        resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        asked_again = {p: n - before[p] for p, n in web.hits.items() if n > before[p]}
        path = lambda url: url[len(web.url) :]  # noqa: E731
        assert not {path(u) for u in stored} & set(asked_again), "a stored download was fetched again"
        assert all(asked_again.get(path(u)) == 1 for u in good if u not in stored)
        version = root / "web" / "versions" / PARTITION
        published = [
            u
            for split in ("train", "val", "test")
            for u in pq.read_table(version / split / "index.parquet").column("source_uri").to_pylist()
        ]
        assert sorted(published) == sorted(good)  # every image once: nothing lost, nothing twice
        rejects = pq.read_table(version / "rejects.parquet").to_pylist()
        assert {(r["source_uri"], r["reason"]) for r in rejects} == {(u, "fetch:http_404") for u in gone}
        assert "Download failures by source:" in resumed.stdout and "web             http_404=8" in resumed.stdout
    finally:
        web.close()


def stored_downloads(work: Path) -> set[str]:
    """The URLs a build has downloaded and kept so far (its download logs, shard by shard)."""
    return {
        entry["uri"]
        for shard in work.glob("*/fetched/shard-*")
        for entry in fetch_cache(str(shard)).entries().values()
        if "failure" not in entry
    }


def test_ui_serves_the_run_history_and_points_its_browser_code_at_its_own_port(dry_then_built):
    """`mmetl ui` over the history the demo builds left: the API behind the runs page lists the build's
    flow run, Completed, with its funnel and version artifacts."""
    import urllib.request

    from flows.local_api import free_port, wait_healthy

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    process = subprocess.Popen(
        [MMETL, "ui", "--port", str(port)],
        env=dry_then_built["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def post(path: str, body: dict) -> list:
        request = urllib.request.Request(
            api + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    try:
        wait_healthy(api, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as response:
            assert json.load(response)["api_url"] == api
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert b"<html" in response.read().lower()
        runs = post("/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 10})
        assert [(r["parameters"].get("dry_run"), r["state"]["type"]) for r in runs] == [
            (False, "COMPLETED"),
            (True, "COMPLETED"),
        ]
        artifacts = post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
        assert {a["key"] for a in artifacts} == {"funnel-demo", "version-demo"}
        funnel = next(a for a in artifacts if a["key"] == "funnel-demo")["data"]
        funnel = json.loads(funnel) if isinstance(funnel, str) else funnel
        assert [row["stage"] for row in funnel] == ["plan", "collect", "clean", "dedupe", "filter", "align", "split"]
        tasks = post("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [runs[0]["id"]]}}, "limit": 200})
        names = {t["name"] for t in tasks}
        assert {"decide-duplicates", "assign-splits", "commit-version"} <= {n.rsplit("-", 1)[0] for n in names} | names
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.parametrize("where", ["no credentials", "no bucket", "a file in the way"])
def test_an_unwritable_storage_root_fails_in_one_line_before_anything_starts(tmp_path, s3, where):
    env = cli_env(tmp_path, "unused")
    if where == "no credentials":
        root, cause = "s3://some-bucket/prefix", "no AWS credentials"
        env.update(AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"], AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    elif where == "no bucket":
        root, cause = "s3://no-such-bucket/prefix", "FileNotFoundError: The specified bucket does not exist"
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    else:
        (tmp_path / "file").write_text("a file, not a folder")
        root, cause = str(tmp_path / "file" / "data"), "NotADirectoryError"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: demo\nsource: {{name: demo, kind: manifest, uri: {tmp_path}/none.jsonl}}\n")
    result = subprocess.run(
        [MMETL, "build", str(recipe), "--storage", root], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: cannot write to the storage root {root}: {cause}"), line
    assert result.stdout == "" and not (tmp_path / "prefect-home").exists()  # no Prefect API, no Ray
    verbose = subprocess.run(
        [MMETL, "build", str(recipe), "--storage", root, "--verbose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr and line in verbose.stderr
