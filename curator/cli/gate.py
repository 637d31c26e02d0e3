"""``curator gate`` and ``curator report`` (registered on the main group with ``main.add_command``).

``gate`` exit codes: 0 every rule passed, 1 a rule failed (or the run failed), 2 usage error.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from curator.cli.common import RunDirParam, friendly


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--rules", type=click.Path(exists=True, dir_okay=False),
              help="YAML list of {name, sql} rules (default: the recipe's `gate:` list).")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False),
              help="Run this recipe on PATHS (data files; default: the recipe's inputs) first.")
@click.option("--run-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="With --recipe: run directory (default: runs/gate-<recipe name>); reuses finished work.")
@click.option("--workers", type=int, default=None, help="With --recipe: override executor.workers.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no JSON; failing rules on stderr.")
@friendly
def gate(paths, rules, recipe, run_dir, workers, quiet):
    """Evaluate gate rules on RUN_DIR (or run --recipe on DATA... first); print the JSON verdict.

    \b
    curator gate RUN_DIR [--rules FILE]
    curator gate --recipe RECIPE [DATA...] [--run-dir DIR]
    """
    from curator.gate import evaluate, parse_rules  # start-up time: each command imports only what it uses
    from curator.recipe import load_recipe  # start-up time: each command imports only what it uses

    if recipe:
        from curator.pipeline import (
            run as run_recipe,  # start-up time: each command imports only what it uses
        )

        rec = load_recipe(recipe)
        root = Path(run_dir or Path("runs") / f"gate-{rec.name}")
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the verdict
            run_recipe(rec, root, inputs=list(paths) or None, workers=workers, quiet=quiet)
        rule_list = rules or parse_rules([vars(g) for g in rec.gate], f"{recipe}: gate")
    else:
        if len(paths) != 1 or run_dir:
            raise click.UsageError("give exactly one RUN_DIR (or --recipe RECIPE DATA... to run first)")
        root = RunDirParam(finished=True).convert(paths[0], None, click.get_current_context())
        rule_list = rules
    verdict = evaluate(root, rule_list or None)
    if not quiet:
        click.echo(json.dumps(verdict, indent=2))
    for r in verdict["rules"]:
        if not r["passed"] or not quiet:
            click.echo(f"{'pass' if r['passed'] else 'FAIL'}  {r['name']}: {r['sql']}  (value {r['value']})", err=True)
    sys.exit(0 if verdict["passed"] else 1)


@click.command()
@click.argument("run_dir", type=RunDirParam(finished=True))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Default: RUN_DIR/report.html.")
@friendly
def report(run_dir, out):
    """Write a self-contained HTML report of RUN_DIR: warnings, counts and times per stage, the rows each rule
    dropped or flagged, score histograms with the decision thresholds, added samples, the gate verdict."""
    from curator.report import write_report  # start-up time: each command imports only what it uses

    click.echo(str(write_report(Path(run_dir), out)))
