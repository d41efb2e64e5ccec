"""Errors the CLI turns into exit codes and one clear line."""

from __future__ import annotations


class TunerError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(TunerError):
    """Bad input from the user: a space file, a flag, a path. Exit code 2.

    The message names the source and the field: ``spaces/x.yaml: space.lr0: low (0.1) must be
    < high (0.01)``.
    """

    exit_code = 2

    def __init__(self, source: str, field: str | None, message: str) -> None:
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.field = field
        self.message = message


class StudyError(TunerError):
    """A study that cannot go on (e.g. too many failures in a row). Exit code 1."""

    exit_code = 1
