"""The one exception type the project raises for problems a user can fix."""


class VimbenchError(Exception):
    """A user-facing error. Its message says what went wrong and what to do; the CLI prints it
    as one red line and exits with code 2."""
