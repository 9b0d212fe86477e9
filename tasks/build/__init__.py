"""The build: the plan and its execution (the local runner), one step over one shard (the engine), the
stage registry, and the dry run."""
