"""One exception type for everything a user can fix: the CLI prints it on one line and exits 2."""

from __future__ import annotations


class MedtuneError(Exception):
    """A problem with the user's input (file, config, model path), not a bug in medtune.

    `where` is "file", "file:line" or "file:line: field"; `hint` says what to do about it.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class DataError(MedtuneError):
    """A data file that does not follow the data contract (docs/data-formats.md)."""

    def __init__(self, path, line: int | None, field: str | None, message: str, hint: str | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if field:
            where += f": field '{field}'"
        self.path, self.line, self.field = str(path), line, field
        super().__init__(message, where=where, hint=hint)


class ConfigError(MedtuneError):
    """A recipe or override that does not match the stage's config dataclass."""
