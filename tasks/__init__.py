"""mmetl stages: plain Python, no Prefect or Ray imports. Flows wire them; the engine runs them."""
