"""Errors a user can fix. The CLI prints them as one line and exits with `exit_code`, no traceback."""

from __future__ import annotations


class SiamtoolError(Exception):
    """A problem with the user's input or environment: the message says what and what to do."""

    exit_code = 2


class ConfigError(SiamtoolError):
    """A config file or --set override is invalid."""


class DatasetError(SiamtoolError):
    """A dataset file is missing or malformed; the message names the file (and line)."""
