"""User-facing errors: each carries the exit code the CLI returns (2 usage/input, 1 run)."""


class CuratorError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class RecipeError(CuratorError):
    """A recipe, parameter or usage mistake; the message names the key and what to do."""

    exit_code = 2


class InputError(CuratorError):
    """Input data that cannot be read at all (file level); row-level problems are quarantined."""

    exit_code = 2


class RunError(CuratorError):
    """A run that failed (a stage raised, an invariant broke, an output was tampered with)."""

    exit_code = 1
