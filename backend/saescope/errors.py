"""Exception types shared by every stage.

Owns the small hierarchy of user-facing errors. Each carries a message that tells the user what to
change; the CLI prints it without a traceback and the API maps it to a 4xx JSON body. This module
must not import any other saescope module.
"""

from __future__ import annotations


class SaescopeError(Exception):
    """Base class: a problem the user can fix (bad input, missing file, wrong option)."""


class ConfigError(SaescopeError):
    """A configuration value or command-line option is invalid."""


class InputError(SaescopeError):
    """Input data (a file, a text, a request field) is malformed or out of bounds.

    `field` names the offending field when there is one, so APIs can report it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFoundError(SaescopeError):
    """A named thing (model, dictionary, feature, file) does not exist."""


class FormatError(SaescopeError):
    """A file on disk is not in the expected format (e.g. a malformed SAELens folder)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a resumable job. A KeyboardInterrupt (so it stops everything as Ctrl-C does)
    whose message says how far the job got and where its last checkpoint is."""


class DictionaryUnavailable(SaescopeError):
    """A published dictionary cannot be served live: its weights file changed since it was
    published, is missing, or cannot be read. The API answers 409; re-publishing it fixes it."""
