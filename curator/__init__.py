"""curator: safety-aware data curation for LLM fine-tuning and pre-training data.

Python API mirroring the CLI: ``curator.run(recipe, run_dir)``, ``curator.load_recipe(path)``,
``curator.query.connect(run_dir)``, ``curator.verify(run_dir)``.
"""

__version__ = "0.1.0"


def run(recipe, run_dir, **kwargs):
    """Run a recipe (path, YAML text, dict or ``Recipe``) into ``run_dir``; see ``curator.pipeline.run``."""
    from curator.pipeline import run as _run

    return _run(recipe, run_dir, **kwargs)


def load_recipe(source, base_dir=None):
    """Parse and validate a recipe; see ``curator.recipe.load_recipe``."""
    from curator.recipe import load_recipe as _load

    return _load(source, base_dir)


def verify(run_dir):
    """Problems found re-hashing a run's outputs against its manifest (empty list = ok)."""
    from curator.manifest import verify as _verify

    return _verify(run_dir)
