"""The `mmetl` command as a user runs it: it starts its own Prefect API and its own local Ray.

Also the crash story: a build killed mid-run (SIGKILL, no cleanup) is rerun and publishes exactly
what an uninterrupted build publishes, with no duplicates and no gaps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks import storage

from .helpers import tree_digest

PARTITION = "2026-11-02"
MMETL = str(Path(sys.executable).parent / "mmetl")


def cli_env(tmp_path: Path, root: str) -> dict[str, str]:
    """The environment of a fresh shell: no Prefect API and no Ray cluster configured."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API", "MMETL_", "RAY_ADDRESS", "AWS_"))}
    env.update(MMETL_STORAGE=root, MMETL_PREFECT_HOME=str(tmp_path / "prefect-home"))
    return env


def test_bad_recipe_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nsource: {name: demo, kind: manifest, uri: x.jsonl}\nfilter: {min_image_sid: 3}\n")
    result = subprocess.run([MMETL, "build", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "filter.min_image_sid: Extra inputs are not permitted" in result.stderr


def test_missing_source_exits_2_before_starting_anything(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: demo\nsource: {{name: demo, kind: manifest, uri: {tmp_path}/none.jsonl}}\n")
    result = subprocess.run([MMETL, "build", str(recipe)], capture_output=True, text=True, timeout=60,
                            env=cli_env(tmp_path, str(tmp_path / "data")))
    assert result.returncode == 2 and f"{tmp_path}/none.jsonl does not exist" in result.stderr
    assert not (tmp_path / "prefect-home").exists()


def test_killed_build_resumes_to_the_same_version(tmp_path, demo_recipe):
    reference_root, killed_root = str(tmp_path / "reference"), str(tmp_path / "killed")

    done = subprocess.run([MMETL, "build", demo_recipe, "--partition", PARTITION],
                          env=cli_env(tmp_path / "a", reference_root), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Prefect API: http://127.0.0.1:" in done.stdout and "Published " in done.stdout
    assert "Version: " + str(Path(reference_root) / "demo" / "versions" / PARTITION) in done.stdout

    # kill a second build once a few collect-clean shards are committed, before anything is published
    env = cli_env(tmp_path / "b", killed_root)
    process = subprocess.Popen([MMETL, "build", demo_recipe, "--partition", PARTITION], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    work = Path(killed_root) / "demo" / "work" / PARTITION
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(work.glob("*/collect-clean/shard-*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = len(list(work.glob("*/collect-clean/shard-*.json")))
    assert 2 <= committed < 6, "the kill must land mid-step"
    version = Path(killed_root) / "demo" / "versions" / PARTITION
    assert not (version / "manifest.json").exists()

    resumed = subprocess.run([MMETL, "build", demo_recipe, "--partition", PARTITION], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    reference = storage.join(reference_root, "demo", "versions", PARTITION)
    assert tree_digest(str(version)) == tree_digest(reference)


def test_ui_serves_the_run_history_and_points_its_browser_code_at_its_own_port(tmp_path):
    import json
    import urllib.request

    from flows.local_api import free_port, wait_healthy

    port = free_port()
    env = cli_env(tmp_path, str(tmp_path / "data"))
    process = subprocess.Popen([MMETL, "ui", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api", process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as response:
            assert json.load(response)["api_url"] == f"http://127.0.0.1:{port}/api"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert b"<html" in response.read().lower()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
