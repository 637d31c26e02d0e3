"""User-facing errors: each carries the exit code the CLI returns (2 usage/input, 1 run)."""

import errno
import os

# OSErrors the user must fix (disk full, over quota, read-only, no permission): ``storage_error``, exit 2
NOT_WRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


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


class StorageError(RunError):
    """A file that cannot be written (disk full, read-only, no permission): the user must make room or grant
    access, so a usage error (exit 2)."""

    exit_code = 2


class DamagedRunError(CuratorError):
    """A run directory whose files cannot be read (damaged, or changed after the run); a usage error, so that
    ``gate``'s exit 1 still means only a failed rule."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """A signal that stops the command as Ctrl-C does (SIGTERM, ``curator.cli.entry``); exit 128 + its number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = 128 + signum


def storage_error(exc: OSError, dest=None) -> StorageError:
    """``exc`` (writing ``dest``, else about its own file) as one line: the path, the system's reason ("No space left
    on device", without a library's wrapping) and the fix."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    where = f"could not write {dest}: " if dest is not None else f"{exc.filename}: " if exc.filename else ""
    return StorageError(f"{where}{reason}; check free space and permissions")


def damaged_run(root, exc: BaseException, verify: bool = True) -> DamagedRunError:
    """The error for a file of run directory ``root`` that cannot be read: the reader's first line, where to look
    (``curator verify``, which needs the manifest) and the fix."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    look = f"`curator verify {root}` lists what changed, and " if verify else ""
    return DamagedRunError(f"{root}: a file of this run directory cannot be read ({reason}); {look}running the "
                           "recipe again on this run directory rebuilds it")
