"""curator: safety-aware data curation for LLM fine-tuning and pre-training data.

Python API mirroring the CLI: ``curator.run(recipe, run_dir)``, ``curator.load_recipe(path)``,
``curator.query.connect(run_dir)``, ``curator.verify(run_dir)``.
"""

__version__ = "0.1.0"


def run(recipe, run_dir, *, inputs=None, workers=None, executor=None, quiet=False, wait=0.0):
    """Run a recipe (path, YAML text, dict or ``Recipe``) into ``run_dir``; see ``curator.pipeline.run``."""
    from curator.pipeline import run as _run  # start-up time: `import curator` stays light (no pyarrow)

    return _run(recipe, run_dir, inputs=inputs, workers=workers, executor=executor, quiet=quiet, wait=wait)


def load_recipe(source, base_dir=None):
    """Parse and validate a recipe; see ``curator.recipe.load_recipe``."""
    from curator.recipe import load_recipe as _load  # start-up time: `import curator` stays light

    return _load(source, base_dir)


def verify(run_dir):
    """Problems found re-hashing a run's outputs against its manifest (empty list = ok)."""
    from curator.manifest import verify as _verify  # start-up time: `import curator` stays light

    return _verify(run_dir)
