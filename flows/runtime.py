"""Where tasks run: prefect-ray's RayTaskRunner, resolved when a flow starts rather than at import."""

from __future__ import annotations

from prefect.settings import get_current_settings
from prefect_ray import RayTaskRunner

from .ray_env import ray_init_args


class MmetlRayTaskRunner(RayTaskRunner):
    """RayTaskRunner with mmetl's address and worker environment; it joins a Ray this process
    already started (see start_ray), else starts or connects one itself."""

    def __enter__(self):
        self.address, kwargs = ray_init_args(
            self.address, get_current_settings().api.url, self.init_kwargs.get("runtime_env")
        )
        self.init_kwargs = {**self.init_kwargs, **kwargs}
        return super().__enter__()
