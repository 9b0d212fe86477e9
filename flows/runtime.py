"""Where tasks run: prefect-ray's RayTaskRunner, resolved when a flow starts rather than at import."""

from __future__ import annotations

import os

import ray
from prefect.settings import get_current_settings
from prefect_ray import RayTaskRunner

# Environment a worker needs to reach the same Prefect API and the same object storage as the driver.
FORWARDED_PREFIXES = ("MMETL_", "AWS_", "FSSPEC_")


class MmetlRayTaskRunner(RayTaskRunner):
    """Local Ray by default; an existing cluster when MMETL_RAY_ADDRESS is set.

    Every worker is pointed at the flow's own Prefect API: without it each Ray worker would start
    an ephemeral Prefect server of its own (DESIGN.md hazards).
    """

    def __enter__(self):
        # "local" always starts a Ray of our own; plain ray.init() would join any `ray start` cluster it finds
        self.address = self.address or os.environ.get("MMETL_RAY_ADDRESS") or "local"
        env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
        api_url = get_current_settings().api.url
        if api_url:
            env_vars["PREFECT_API_URL"] = api_url
        env_vars["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        runtime_env = dict(self.init_kwargs.get("runtime_env") or {})
        runtime_env["env_vars"] = {**env_vars, **(runtime_env.get("env_vars") or {})}
        self.init_kwargs["runtime_env"] = runtime_env
        if self.address == "local":  # a Ray of our own: keep it on loopback
            self.init_kwargs.setdefault("_node_ip_address", "127.0.0.1")
        return super().__enter__()


def worker_slots() -> int:
    """CPUs of the Ray cluster the flow runs on: a small input is cut into at least this many shards."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
