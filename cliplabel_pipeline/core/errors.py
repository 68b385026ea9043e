"""Errors the user can act on: the CLI prints their message as one line, without a traceback."""


class CliplabelError(Exception):
    """A failure with a message that says what went wrong and how to fix it."""


class JobGone(CliplabelError):
    """The job is not there: its id names no folder (deleted, renamed) or no folder at all. A lasting fault:
    running the same step again cannot succeed, so it is not retried."""


class UnknownJob(JobGone):
    """A valid job id that names no folder under the results root."""
