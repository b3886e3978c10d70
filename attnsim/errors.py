"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class AttnsimError(ValueError):
    """Bad input from the user (workload, option, GPU file...): the message names the fix."""
