"""Errors that the command line turns into one line on stderr and exit code 2."""


class TetherError(ValueError):
    """A problem with the user's input or configuration.

    The command line prints it as one line on stderr and exits with code 2; from Python it is a ValueError.
    """


class DataError(TetherError):
    """A problem in a data file; the message names the file and line."""

    def __init__(self, path, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = path, line, problem
