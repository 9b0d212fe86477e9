"""What code a build runs: the digest of the tasks package's source (part of the build key and the manifest)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path


@cache
def stage_code_digest() -> str:
    """sha256 over the source of the tasks package: everything that decides what a build writes."""
    package = Path(__file__).parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
