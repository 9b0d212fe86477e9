"""The nightly deployment points at a real flow with parameters it accepts and a valid schedule."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint

REPO = Path(__file__).resolve().parents[1]


def test_every_deployment_loads_and_binds_its_parameters(monkeypatch):
    monkeypatch.chdir(REPO)
    config = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    assert config["deployments"]
    for deployment in config["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert flow.name == "build-dataset"
        bound = flow.validate_parameters(deployment["parameters"])
        assert Path(bound["recipe_path"]).exists()
        for schedule in deployment["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
