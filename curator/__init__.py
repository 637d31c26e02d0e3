"""curator: safety-aware data curation for LLM fine-tuning and pre-training data.

Python API mirroring the CLI: ``curator.run(recipe, run_dir)``, ``curator.apply(data, stages=[...])``,
``curator.load_recipe(path)``, ``curator.query.connect(run_dir)``, ``curator.verify(run_dir)``,
``curator.RunResult.load(run_dir)``. Submodules load
on first use, so ``import curator`` stays light.
"""

import importlib

__version__ = "0.1.0"
_LAZY_MODULES = ("query", "gate", "report", "status")


def __getattr__(name: str):
    """``curator.query`` and the other reader modules, and ``curator.RunResult``, imported when first used."""
    if name in _LAZY_MODULES:
        return importlib.import_module(f"curator.{name}")
    if name == "RunResult":
        return importlib.import_module("curator.result").RunResult
    raise AttributeError(f"module 'curator' has no attribute {name!r}")


def run(recipe, run_dir, *, inputs=None, workers=None, executor=None, quiet=False, wait=0.0):
    """Run a recipe (path, YAML text, dict or ``Recipe``) into ``run_dir``; see ``curator.pipeline.run``.
    ``inputs`` are ``--input`` values (``[NAME=]PATH``); returns a ``RunResult``."""
    from curator.pipeline import run as _run  # start-up time: `import curator` stays light (no pyarrow)

    return _run(recipe, run_dir, inputs=inputs, workers=workers, executor=executor, quiet=quiet, wait=wait)


def apply(data, *, stages=None, recipe=None, run_dir=None, input=None, format=None, workers=None, quiet=True,
          wait=0.0):
    """Run ``stages`` (names or ``{use, with}`` mappings) or a ``recipe`` on ``data`` (a ``datasets.Dataset``, a
    ``pyarrow.Table`` or a pandas ``DataFrame``) and return a ``datasets.Dataset``: every input row in input order
    with ``sample_id``, the score columns, ``status`` (kept, dropped, flagged, quarantined, probe) and
    ``status_reason``. ``input``: the recipe input the data replaces; ``format``: its layout (``messages``, ...)
    when its columns fit several or none; ``run_dir``: default a new temporary
    directory; ``wait``: seconds to wait for another run of ``run_dir``. See ``curator.api.apply``."""
    from curator.api import apply as _apply  # start-up time: `import curator` stays light

    return _apply(data, stages=stages, recipe=recipe, run_dir=run_dir, input=input, format=format, workers=workers,
                  quiet=quiet, wait=wait)


def load_recipe(source, base_dir=None):
    """Parse and validate a recipe; see ``curator.recipe.load_recipe``."""
    from curator.recipe import load_recipe as _load  # start-up time: `import curator` stays light

    return _load(source, base_dir)


def verify(run_dir):
    """Problems found re-hashing a run's outputs against its manifest (empty list = ok)."""
    from curator.manifest import verify as _verify  # start-up time: `import curator` stays light
    from curator.result import existing_dir

    return _verify(existing_dir(run_dir))
