"""Every deployment in deployments/prefect.yaml points at a real flow with parameters it accepts and
valid schedules (tests/test_service.py runs one through a real server and worker)."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint

REPO = Path(__file__).resolve().parents[1]


def test_every_deployment_loads_and_binds_its_parameters(monkeypatch):
    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    names = {d["name"] for d in config["deployments"]}
    # the nightly of each shipped recipe, and the backfill
    assert names == {f"{p.stem}-nightly" for p in (REPO / "recipes").glob("*.yaml")} | {"backfill"}
    for deployment in config["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        parameters = dict(deployment["parameters"])
        if flow.name == "backfill":
            parameters.update(start="2026-01-01", end="2026-01-02")  # given when a backfill is run
        else:
            assert flow.name == "build-dataset" and deployment["schedules"]
        bound = flow.validate_parameters(parameters)
        assert Path(bound["recipe_path"]).exists()
        for schedule in deployment.get("schedules", []):
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
