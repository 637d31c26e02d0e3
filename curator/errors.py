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


class DamagedRunError(CuratorError):
    """A run directory whose files cannot be read (damaged, or changed after the run); a usage error, so that
    ``gate``'s exit 1 still means only a failed rule."""

    exit_code = 2


def damaged_run(root, exc: BaseException, verify: bool = True) -> DamagedRunError:
    """The error for a file of run directory ``root`` that cannot be read: the reader's first line, where to look
    (``curator verify``, which needs the manifest) and the fix."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    look = f"`curator verify {root}` lists what changed, and " if verify else ""
    return DamagedRunError(f"{root}: a file of this run directory cannot be read ({reason}); {look}running the "
                           "recipe again on this run directory rebuilds it")
