"""The errors `weft` reports to its user as one line, without a traceback."""


class WeftError(Exception):
    """A failure whose message is meant for the user (what went wrong, and what to do)."""
