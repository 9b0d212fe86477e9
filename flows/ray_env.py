"""Ray for a build, without Prefect: which Ray, with what environment, started ahead of the flow.

Kept apart from runtime.py (which imports Prefect) so that the command can start Ray first and
import Prefect while Ray boots.
"""

from __future__ import annotations

import importlib
import logging
import os
import time

import ray

# Environment a worker needs to reach the same Prefect API and the same object storage as the driver.
FORWARDED_PREFIXES = ("MMETL_", "AWS_", "FSSPEC_")


def ray_init_args(address: str | None, api_url: str | None, runtime_env: dict | None = None) -> tuple[str, dict]:
    """(address, ray.init keyword arguments): local Ray by default, an existing cluster when
    MMETL_RAY_ADDRESS is set; workers get the driver's Prefect API and storage settings.

    Every worker is pointed at the flow's own Prefect API: without it each Ray worker would start
    an ephemeral Prefect server of its own (seen: three servers and 40 s for a two-worker build).
    """
    # "local" always starts a Ray of our own; plain ray.init() would join any `ray start` cluster it finds
    address = address or os.environ.get("MMETL_RAY_ADDRESS") or "local"
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
    if api_url:
        env_vars["PREFECT_API_URL"] = api_url
    env_vars["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if address == "local":
        # Ray's notice that it turned token authentication on by default: true of a cluster of our own on
        # loopback, and nothing for the user to act on
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # A Ray of our own: its workers inherit this environment, so no runtime_env (whose own
        # worker pool starts seconds slower); on loopback; no dashboard (seconds to start; progress
        # and history are in the Prefect UI).
        os.environ.update(env_vars)
        return address, {"runtime_env": runtime_env, "_node_ip_address": "127.0.0.1", "include_dashboard": False}
    runtime_env = dict(runtime_env or {})
    runtime_env["env_vars"] = {**env_vars, **(runtime_env.get("env_vars") or {})}
    kwargs = {"runtime_env": runtime_env}
    return address, kwargs


def start_ray(api_url: str | None, quiet: bool = False, preload: str | None = None) -> None:
    """Start (or join) Ray for the flow ahead of time and start one worker per CPU, each importing
    `preload` (the flow's module: prefect, prefect_ray, the stages) while the driver goes on, so that
    all of it overlaps the Prefect server's start instead of following it. The flow's task runner then
    uses this Ray; the caller shuts it down. `quiet`: workers' output stays in Ray's logs (and their
    Prefect log lines in the UI), off this terminal."""
    address, kwargs = ray_init_args(None, api_url)
    if quiet:
        kwargs.update(log_to_driver=False, logging_level=logging.WARNING)
    ray.init(address, **kwargs)
    warm = ray.remote(num_cpus=1)(_warm_worker)
    # not waited for: the driver imports the flow meanwhile (a failing import shows in the first task)
    for _ in range(worker_slots()):
        warm.remote(preload)


def _warm_worker(preload: str | None) -> None:
    if preload:
        importlib.import_module(preload)
    time.sleep(0.5)  # held a moment, so that every CPU starts a worker of its own


def worker_slots() -> int:
    """CPUs of the Ray cluster the flow runs on: a small input is cut into at least this many shards."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
