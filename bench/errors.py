"""User-facing errors.

Anything a user can cause (a wrong file, a bad shape, a missing checkpoint) raises a `BenchError`. The CLI
prints its message without a traceback; library callers can catch it. Programming errors stay ordinary
exceptions so they keep their tracebacks.
"""


class BenchError(Exception):
    """An error caused by the user's input or environment, with a message that says how to fix it."""


class ChecksumError(BenchError):
    """A file's sha256 differs from the pinned one: it is refused rather than silently used."""


class MissingFilesError(BenchError):
    """Files that cannot be found locally nor downloaded (e.g. no network).

    The message lists each file, where it comes from and where to put it, so an offline user can fix it.
    """

    def __init__(self, missing: list[tuple[str, str, str]], hint: str = ""):
        self.missing, self.hint = missing, hint
        lines = ["These files are needed but are not available locally and could not be downloaded:"]
        for name, source, destination in missing:
            lines.append(f"  - {name}\n      from: {source}\n      put it at: {destination}")
        super().__init__("\n".join(lines + ([hint] if hint else [])))
