"""Credentials out of what is published: a presigned or token-bearing URL is kept for fetching, but
the index, the tar members and the rejects show it with its secrets replaced.

Redacted: a password in the URL's user info, and query parameters whose names carry secrets
(`X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`, `token`, `access_token`, `sig`,
`signature`, `key`, `api_key`, `secret`, `password`, `auth`, `session`...). The rest of the URL stays,
so it still says where the media came from.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa

MASK = "REDACTED"
SECRET_NAME = re.compile(
    r"token|sig|secret|password|passwd|pwd|credential|auth|session|(^|[-_])key$|^key|apikey", re.IGNORECASE
)
URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


def redact_url(url: str) -> str:
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_NAME.search(name) for name, _ in pairs):
            query = urlencode([(name, MASK if SECRET_NAME.search(name) else value) for name, value in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str | None) -> str | None:
    """Every URL in a message (an error naming what it fetched) redacted."""
    return text if not text else URL.sub(lambda m: redact_url(m.group()), text)


def redact_columns(table: pa.Table, urls: tuple[str, ...] = ("source_uri",), texts: tuple[str, ...] = ()) -> pa.Table:
    for name, redact in [(n, redact_url) for n in urls] + [(n, redact_text) for n in texts]:
        if name in table.column_names:
            values = [None if v is None else redact(v) for v in table.column(name).to_pylist()]
            i = table.schema.get_field_index(name)
            table = table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    return table
