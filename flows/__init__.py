"""Prefect flows: wiring only. The work itself lives in tasks/."""
