"""Errors the user can act on: the CLI prints their message as one line, without a traceback."""


class CliplabelError(Exception):
    """A failure with a message that says what went wrong and how to fix it."""
