"""Decode each kind of media once: measure it, normalize it, or raise MediaError with a reason code."""


class MediaError(Exception):
    """Media that cannot be used; `code` becomes the reject reason (e.g. decode:truncated)."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
