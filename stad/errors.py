"""Error type for bad user input (files, arguments); the CLI prints it as one line."""


class StadError(ValueError):
    """Bad input: a file, a field or an argument. The message names the file, line or field."""
