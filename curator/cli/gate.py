"""``curator gate`` and ``curator report`` (registered on the main group with ``main.add_command``).

``gate`` exit codes: 0 every rule passed, 1 a rule failed, 2 anything else (usage, recipe or input error, a run
directory that cannot be read, a ``--recipe`` run that failed), so that 1 always means a failed rule.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from pathlib import Path

import click

from curator.cli.common import WORKERS, RunDirParam, friendly
from curator.errors import NOT_WRITABLE, CuratorError


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--rules", type=click.Path(exists=True, dir_okay=False),
              help="YAML list of {name, sql} rules (default: the recipe's `gate:` list).")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False),
              help="Run this recipe on PATHS (data files; default: the recipe's inputs) first.")
@click.option("--run-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="With --recipe: run directory (default: runs/gate-<recipe name>); reuses finished work.")
@click.option("--workers", type=WORKERS, default=None, help="With --recipe: override executor.workers.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no JSON; failing rules on stderr.")
@click.option("--verify", "check_files", is_flag=True,
              help="First re-hash the run's files against its manifest (as `curator verify`): a changed file exits 2 "
                   "instead of being gated (without it, files of the recorded sizes are trusted).")
@friendly
def gate(paths, rules, recipe, run_dir, workers, quiet, check_files):
    """Evaluate gate rules on RUN_DIR (or run --recipe on DATA... first); print the JSON verdict.
    Exit 0 pass, 1 a rule failed, 2 any other error.

    \b
    curator gate RUN_DIR [--rules FILE] [--verify]
    curator gate --recipe RECIPE [DATA...] [--run-dir DIR]
    """
    try:
        verdict = _verdict(paths, rules, recipe, run_dir, workers, quiet, check_files)
    except CuratorError as exc:
        exc.exit_code = 2  # a recipe, input or run error (RunError is 1 elsewhere): 1 is kept for failed rules
        raise
    except click.ClickException:
        raise
    except Exception as exc:  # an unexpected error (a bug): its traceback, and not the exit code of a failed rule
        if isinstance(exc, OSError) and exc.errno in NOT_WRITABLE:
            raise  # disk space or permissions: one line naming the file (``friendly``), exit 2
        traceback.print_exc()
        sys.exit(2)
    if not quiet:
        click.echo(json.dumps(verdict, indent=2))
    for r in verdict["rules"]:
        if not r["passed"] or not quiet:
            click.echo(f"{'pass' if r['passed'] else 'FAIL'}  {r['name']}: {r['sql']}  (value {r['value']})", err=True)
    sys.exit(0 if verdict["passed"] else 1)


def _verdict(paths, rules, recipe, run_dir, workers, quiet, check_files) -> dict:
    """The verdict of the rules on the run directory PATHS names, or on the run of ``recipe`` (made first);
    ``check_files``: after its files are checked against its manifest."""
    from curator.gate import evaluate, parse_rules  # start-up time: each command imports only what it uses
    from curator.recipe import load_recipe  # start-up time: each command imports only what it uses

    def checked(root: Path) -> Path:
        from curator.errors import DamagedRunError  # start-up time: each command imports only what it uses
        from curator.manifest import verify  # start-up time: each command imports only what it uses

        problems = verify(root) if check_files else []
        if problems:
            raise DamagedRunError(f"{root}: not gated: {len(problems)} file(s) differ from the manifest, e.g. "
                                  f"{problems[0]} (see them all with: curator verify {root})")
        return root

    if not recipe:
        for given, option in ((run_dir, "-o/--run-dir"), (workers, "--workers")):
            if given is not None:
                raise click.UsageError(f"{option} needs --recipe (it sets up the run `gate --recipe` makes first); "
                                       "to gate a finished run, give its directory alone: curator gate RUN_DIR")
        if len(paths) != 1:
            raise click.UsageError("give exactly one RUN_DIR (or --recipe RECIPE DATA... to run first)")
        return evaluate(checked(Path(RunDirParam(finished=True).convert(paths[0], None, click.get_current_context()))),
                        rules)
    from curator.pipeline import run as run_recipe  # start-up time: each command imports only what it uses

    rec = load_recipe(recipe)
    root = Path(run_dir or Path("runs") / f"gate-{rec.name}")
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the verdict
        run_recipe(rec, root, inputs=list(paths) or None, workers=workers, quiet=quiet)
    return evaluate(checked(root), rules or parse_rules([vars(g) for g in rec.gate], f"{recipe}: gate") or None)


@click.command()
@click.argument("run_dir", type=RunDirParam(finished=True))
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Default: RUN_DIR/report.html.")
@friendly
def report(run_dir, out):
    """Write a self-contained HTML report of RUN_DIR: warnings, counts and times per stage, the rows each rule
    dropped or flagged, score histograms with the decision thresholds, added samples, the gate verdict."""
    from curator.report import write_report  # start-up time: each command imports only what it uses

    click.echo(str(write_report(Path(run_dir), out)))
