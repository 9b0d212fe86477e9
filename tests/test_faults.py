"""Faults lose nothing: a build SIGKILLed at 20 seeded points of every stage resumes to the same bytes;
object storage that fails 5% of its requests (a fault-injecting proxy in front of moto's S3) is
absorbed by retries with the same output; no credential leaks into what a build writes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.core import storage

from .flaky import FlakyProxy
from .helpers import build_in_process, image_bytes, tree_digest

REPO = Path(__file__).resolve().parents[1]
KILL_POINTS, SEED = 20, 20261123


@pytest.fixture(scope="module")
def corpus(demo_manifest) -> str:
    """The first 160 annotation rows of the demo corpus (images, sounds, videos and planted problems)."""
    lines = Path(demo_manifest).read_text().splitlines()[:160]
    path = Path(demo_manifest).parent / "captions-160.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def killpoint(captions: str, root: Path, die_at: int | None = None, kind: str = "manifest"):
    command = [sys.executable, "-m", "tests.killpoint", captions, str(root), "--kind", kind]
    if die_at:
        command += ["--die-at", str(die_at)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def version_of(root: Path) -> tuple[dict, dict]:
    """(sha256 of every file but the manifest, the manifest less its timestamp)."""
    version = root / "t" / "versions" / "p"
    manifest = json.loads((version / "manifest.json").read_text())
    manifest.pop("created_at")
    return tree_digest(str(version)), manifest


def published_ids(root: Path) -> list[str]:
    version = root / "t" / "versions" / "p"
    return [
        sid
        for split in ("train", "val", "test")
        for sid in pq.read_table(version / split / "index.parquet", columns=["sample_id"]).column(0).to_pylist()
    ]


@pytest.mark.e2e
def test_a_build_killed_at_20_seeded_points_resumes_to_the_same_bytes(tmp_path, corpus):
    whole = killpoint(corpus, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    total = int(whole.stdout.split("ops ")[1].split()[0])
    reference = version_of(tmp_path / "whole")
    reference_ids = sorted(published_ids(tmp_path / "whole"))
    points = sorted(random.Random(SEED).sample(range(1, total + 1), KILL_POINTS))
    steps_hit = Counter()
    for point in points:
        root = tmp_path / f"killed-at-{point}"
        killed = killpoint(corpus, root, die_at=point)
        assert killed.returncode == -9, (
            f"op {point} of {total}: not killed\n{killed.stdout[-2000:]}{killed.stderr[-2000:]}"
        )
        where = killed.stdout.split("dying at op ")[1].split()[2]
        steps_hit[_part_of_build(where)] += 1
        resumed = killpoint(corpus, root)
        assert resumed.returncode == 0, f"resume after a kill at op {point} ({where}):\n{resumed.stderr[-3000:]}"
        assert version_of(root) == reference, f"a kill at op {point} ({where}) changed the version"
        ids = published_ids(root)
        assert len(ids) == len(set(ids)) and sorted(ids) == reference_ids
    # the points fell in every part of a build: collect+clean, the decisions, filter, split, publish, commit
    assert len(steps_hit) >= 5, steps_hit


@pytest.mark.e2e
def test_a_documents_build_killed_where_documents_are_decided_resumes_to_the_same_bytes(tmp_path):
    """Kills at every write of the documents decision and the step applying it, and at 4 seeded points."""
    from .helpers import real_photos
    from .test_datasets import obelics_corpus

    corpus = str(obelics_corpus(tmp_path / "web", real_photos()) / "obelics.parquet")
    whole = killpoint(corpus, tmp_path / "whole", kind="obelics")
    assert whole.returncode == 0, whole.stderr[-3000:]
    ops = [line.split(": ", 1) for line in whole.stdout.splitlines() if line.startswith("op ")]
    at_documents = [int(n.split()[1]) for n, what in ops if "documents" in what]
    assert len(at_documents) >= 4, ops  # the decision, its marker, the shard outputs of its step
    points = sorted(set(at_documents) | set(random.Random(SEED).sample(range(1, len(ops) + 1), 4)))
    reference = version_of(tmp_path / "whole")
    for point in points:
        root = tmp_path / f"killed-at-{point}"
        assert killpoint(corpus, root, die_at=point, kind="obelics").returncode == -9
        resumed = killpoint(corpus, root, kind="obelics")
        assert resumed.returncode == 0, f"resume after a kill at op {point}:\n{resumed.stderr[-3000:]}"
        assert version_of(root) == reference, f"a kill at op {point} ({ops[point - 1][1]}) changed the version"


@pytest.mark.e2e
def test_object_storage_failing_5_percent_of_requests_changes_nothing(tmp_path, corpus, s3):
    import s3fs

    _, local = build_in_process([_source(corpus)], str(tmp_path / "local"))
    proxy = FlakyProxy(os.environ["AWS_ENDPOINT_URL"], failure_rate=0.05, seed=SEED)
    saved = os.environ["AWS_ENDPOINT_URL"]
    try:
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        s3fs.S3FileSystem.clear_instance_cache()  # the cached client still points at moto itself
        layout, remote = build_in_process([_source(corpus)], f"{s3}/flaky")
        assert proxy.failed >= 3, (proxy.failed, proxy.requests)  # about 5% of ~120 requests, seeded
        assert tree_digest(layout.version) == tree_digest(str(tmp_path / "local" / "t" / "versions" / "p"))
        for key in ("splits", "samples", "rejected", "files", "build_key"):
            assert remote[key] == local[key]

        # and the faults do bite: with no retries, the same storage fails a build
        os.environ["AWS_MAX_ATTEMPTS"] = "1"
        s3fs.S3FileSystem.clear_instance_cache()
        with pytest.raises(Exception) as failure:
            build_in_process([_source(corpus)], f"{s3}/no-retries")
        assert "Service Unavailable" in repr(failure.value), repr(failure.value)  # s3fs names the 503
    finally:
        os.environ.pop("AWS_MAX_ATTEMPTS", None)
        os.environ["AWS_ENDPOINT_URL"] = saved
        s3fs.S3FileSystem.clear_instance_cache()
        proxy.stop()


def _part_of_build(uri: str) -> str:
    """The step a storage operation belongs to: the work folder's step, or the version, or the index."""
    if "/work/p/" in uri:
        return uri.split("/work/p/")[1].split("/")[1]
    return "version" if "/versions/p" in uri else uri.split("/t/")[1].split("/")[0]


def _source(captions: str):
    from tasks.sources import make_source

    return make_source(name="demo", kind="manifest", uri=captions)


@pytest.mark.e2e
def test_no_credential_reaches_logs_artifacts_manifests_or_the_index(tmp_path, s3):
    """Presigned and token-bearing URLs and the storage's secret key, through a whole `mmetl build` to S3:
    none of them in anything it writes (the version, run records, the log file) or in the Prefect
    server's database (flow parameters, logs, artifacts), or on the terminal."""
    from .test_cli import MMETL, PARTITION, cli_env
    from .web import WebServer

    token, signature, secret_key = (f"{kind}{uuid.uuid4().hex}" for kind in ("tok", "sig", "key"))
    web = WebServer()
    try:
        good = [
            web.add(f"/img/{i}.jpg", body=image_bytes(size=(96, 64), seed=i), content_type="image/jpeg")
            + f"?X-Amz-Signature={signature}&token={token}&w=96"
            for i in range(12)
        ]
        gone = [f"{web.url}/gone/{i}.jpg?access_token={token}" for i in range(3)]
        listing = tmp_path / "list.jsonl"
        listing.write_text(
            "".join(json.dumps({"url": u, "caption": f"picture number {i}"}) + "\n" for i, u in enumerate(good + gone))
        )
        recipe = tmp_path / "web.yaml"
        recipe.write_text(
            f"name: web\nsources: [{{name: web, kind: urls, uri: {listing}}}]\n"
            "network: {allow_hosts: [127.0.0.1], timeout_s: 5}\n"
        )
        root = f"{s3}/least-privilege"
        env = cli_env(tmp_path, root)
        env.update(
            AWS_ENDPOINT_URL=os.environ["AWS_ENDPOINT_URL"],
            AWS_ACCESS_KEY_ID="AKIATESTING",
            AWS_SECRET_ACCESS_KEY=secret_key,
            AWS_DEFAULT_REGION="us-east-1",
        )
        build = subprocess.run(
            [MMETL, "build", str(recipe), "--partition", PARTITION],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    finally:
        web.close()
    secrets = (token, signature, secret_key)
    written = {f"{root}/{name}": storage.read_bytes(f"{root}/{name}") for name in storage.list_files(root)}
    assert any(name.endswith("/index.parquet") for name in written) and any("/logs/" in name for name in written)
    for folder, _, files in os.walk(tmp_path / "prefect-home"):  # the server's database, its log
        for name in files:
            written[os.path.join(folder, name)] = Path(folder, name).read_bytes()
    assert any(name.endswith(".db") for name in written)
    written["terminal"] = (build.stdout + build.stderr).encode()
    leaks = {name: [s[:3] for s in secrets if s.encode() in data] for name, data in written.items()}
    assert not {name: found for name, found in leaks.items() if found}
    # what the index says of a source: where it came from, with its secrets masked
    index = (
        storage.read_parquet(f"{root}/web/versions/{PARTITION}/train/index.parquet").column("source_uri").to_pylist()
    )
    assert all("X-Amz-Signature=REDACTED&token=REDACTED&w=96" in uri for uri in index)


def test_server_side_encryption_settings_reach_every_object_written(tmp_path, s3):
    """`FSSPEC_S3` (JSON, read by fsspec at import, forwarded to Ray workers) carries s3fs's settings,
    e.g. SSE-KMS with a key: a build's objects are stored encrypted with it."""
    import boto3

    code = (
        "import sys; from tasks.core import storage; "
        "storage.write_json(sys.argv[1] + '/a.json', {'x': 1}); "
        "storage.write_parquet(sys.argv[1] + '/b.parquet', __import__('pyarrow').table({'x': [1]}))"
    )
    env = {
        **os.environ,
        "FSSPEC_S3": json.dumps(
            {"s3_additional_kwargs": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/mmetl-datasets"}}
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, f"{s3}/sse"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = boto3.client("s3")
    for key in ("sse/a.json", "sse/b.parquet"):
        head = client.head_object(Bucket=s3.removeprefix("s3://"), Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith("alias/mmetl-datasets")


@pytest.mark.e2e
def test_a_ray_worker_killed_mid_shard_is_retried_and_the_version_is_whole(tmp_path, demo_recipe, ray_cluster):
    """`mmetl build` on the two-node cluster; the Ray worker process running a shard is SIGKILLed. Ray
    runs the shard again (on whichever node has a free CPU) and the build publishes every item.
    Ray's task list lags the workers by a moment, so a kill can land just after its shard finished (then
    nothing needs a retry): the test kills the worker of another running shard until a retry is seen. The
    same lag lets a kill meant for one shard hit a reused worker that already runs another shard's retry,
    so a shard may fail more than once: what must hold is that every failure is the killed worker and
    the last attempt finishes."""
    from ray.util.state import list_tasks

    from .test_cli import MMETL, cli_env

    def shard_tasks(*filters):
        return list_tasks(
            address=ray_cluster["dashboard"], limit=1000, filters=[("name", "=", "run_step_shard"), *filters]
        )

    env = cli_env(tmp_path, str(tmp_path / "out"))
    command = [MMETL, "build", demo_recipe, "--partition", "2026-01-09", "--ray-address", ray_cluster["address"]]
    env["RAY_AUTH_MODE"] = "disabled"  # as the test cluster was started
    with open(tmp_path / "build.log", "wb") as log:
        build = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed, retried, deadline, last_kill = set(), None, time.monotonic() + 240, 0.0
    try:
        while retried is None:
            assert build.poll() is None, (tmp_path / "build.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no retry seen after killing the workers of {len(killed)} shards"
            running = [t for t in shard_tasks(("state", "=", "RUNNING")) if t.worker_pid and t.task_id not in killed]
            if running and time.monotonic() - last_kill > 5:  # give a kill time to show as a retry
                os.kill(running[0].worker_pid, signal.SIGKILL)
                killed.add(running[0].task_id)
                last_kill = time.monotonic()
            time.sleep(0.5)
            retried = next((t for t in shard_tasks() if t.task_id in killed and t.attempt_number >= 1), None)
        assert build.wait(timeout=600) == 0, (tmp_path / "build.log").read_text()[-3000:]
    finally:
        if build.poll() is None:
            build.kill()
    attempts = sorted(shard_tasks(("task_id", "=", retried.task_id)), key=lambda a: a.attempt_number)
    seen = [(a.attempt_number, a.state, a.node_id, a.error_type) for a in attempts]
    assert [a.attempt_number for a in attempts] == list(range(len(attempts))) and len(attempts) >= 2, seen
    assert [(a.state, a.error_type) for a in attempts[:-1]] == [("FAILED", "WORKER_DIED")] * (len(attempts) - 1), seen
    assert attempts[-1].state == "FINISHED", seen
    manifest = json.loads((tmp_path / "out" / "demo" / "versions" / "2026-01-09" / "manifest.json").read_text())
    funnel = {
        line["stage"]: line
        for line in json.loads((tmp_path / "out" / "demo" / "versions" / "2026-01-09" / "stats.json").read_text())[
            "funnel"
        ]
    }
    # every item the plan made is published or a reject (the plan's rejects are annotation rows, not
    # items): the killed shard lost nothing and doubled nothing
    assert manifest["samples"] + manifest["rejected"] - funnel["plan"]["rejected"] == funnel["plan"]["items"]
    assert manifest["samples"] == funnel["split"]["kept"]
