"""Errors with a documented exit code.

Exit codes (docs/design.md): 0 success, 2 usage or input error, 3 verification failed, 1 anything else.
The CLI prints ``error: <message>`` on one line and exits with ``exit_code``; ``--debug`` shows the traceback.
"""

from __future__ import annotations


class OnnxcompError(Exception):
    """Base class: a failure the user can act on; carries its exit code."""

    exit_code = 1


class UsageError(OnnxcompError):
    """Bad command line, pass spec, option or recipe."""

    exit_code = 2


class InputError(OnnxcompError):
    """Unreadable, truncated or invalid model, or calibration data that does not fit the model."""

    exit_code = 2


class VerificationError(OnnxcompError):
    """The optimized model's outputs differ from the original's beyond the tolerance."""

    exit_code = 3


class PassError(OnnxcompError):
    """A pass failed in a way it could not turn into a skip (a bug, reported with the pass name)."""

    exit_code = 1
