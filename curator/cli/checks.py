"""``curator validate``, ``status``, ``verify`` and ``stages``: each prints text, or JSON with ``--json``
(``status`` always prints JSON). Registered on the main group with ``main.add_command``."""

from __future__ import annotations

import sys

import click

from curator.cli.common import RunDirParam, echo_json, friendly


@click.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--input", "inputs", multiple=True, metavar="[NAME=]PATH",
              help="Check with this file in place of a recipe input, as `curator run --input` reads it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per recipe (a JSON array).")
@friendly
def validate(recipes, inputs, as_json):
    """Check RECIPES: every problem with its location, then a dry run of each stage's column needs, the
    decide rules and the gate SQL against the columns the inputs and stages declare. Exit 2 on any error; an
    input file that does not exist (a recipe's placeholder) is a warning."""
    from curator.errors import InputError, RecipeError  # start-up time: only what the command uses
    from curator.input_files import expand_inputs  # start-up time: each command imports only what it uses
    from curator.inputs import override_inputs  # start-up time: each command imports only what it uses
    from curator.recipe import load_recipe  # start-up time: each command imports only what it uses
    from curator.validate import dry_run  # start-up time: each command imports only what it uses

    results = []
    for path in recipes:
        entry = {"recipe": path, "ok": False, "errors": [], "warnings": []}
        try:
            rec, roots = override_inputs(load_recipe(path), list(inputs) or None)
            try:
                rec = expand_inputs(rec, roots)
            except InputError as exc:  # a pattern or folder with no data file yet: like a missing input, a warning
                entry["warnings"].append(str(exc))
            rec.input_paths(roots)
            errors, warnings = dry_run(rec, roots)
            entry["errors"], entry["warnings"] = errors, entry["warnings"] + warnings
            entry.update(ok=not entry["errors"], stages=len(rec.stages), sha256=rec.sha256())
        except RecipeError as exc:
            entry["errors"] = [str(exc)]
        results.append(entry)
    if as_json:
        echo_json(results)
    else:
        for r in results:
            for w in r["warnings"]:
                click.echo(f"warning: {r['recipe']}: {w}", err=True)
            for e in r["errors"]:
                click.echo(f"error: {e if e.startswith(r['recipe']) else r['recipe'] + ': ' + e}", err=True)
            if r["ok"]:
                click.echo(f"ok: {r['recipe']} ({r['stages']} stages, sha256 {r['sha256'][:12]})")
    if any(not r["ok"] for r in results):
        sys.exit(2)


@click.command()
@click.argument("run_dir", type=RunDirParam())
@friendly
def status(run_dir):
    """Show what has finished in RUN_DIR per stage, its totals, gate verdict and warnings (JSON; files only)."""
    from curator.status import run_status  # start-up time: each command imports only what it uses

    echo_json(run_status(run_dir))


@click.command()
@click.argument("run_dir", type=RunDirParam(finished=True))
@click.option("--json", "as_json", is_flag=True, help="Print {ok, problems, warnings} as JSON.")
@friendly
def verify(run_dir, as_json):
    """Re-hash exactly the files RUN_DIR's manifest lists and re-check the accounting. Exit 1 if a listed file
    is missing or changed; files the manifest does not list (a `datasets` cache) are warnings."""
    from curator.manifest import verify_run  # start-up time: each command imports only what it uses

    found = verify_run(run_dir)
    if as_json:
        echo_json({"run_dir": str(run_dir), "ok": not found.problems, "problems": found.problems,
                   "warnings": found.warnings})
    else:
        for w in found.warnings:
            click.echo(f"warning: {w}", err=True)
        for p in found.problems:
            click.echo(f"mismatch: {p}", err=True)
        if not found.problems:
            click.echo(f"ok: {run_dir} matches its manifest")
    if found.problems:
        sys.exit(1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the stages as a JSON array.")
@friendly
def stages(as_json):
    """List every registered stage: parameters (type, default, help) and the columns it writes."""
    from curator.catalog import catalog  # start-up time: loads every stage class

    found = catalog()
    if as_json:
        echo_json(found)
        return
    for s in found:
        if "error" in s:
            click.echo(f"{s['name']}  {s['error']}")
            continue
        click.echo(f"{s['name']}  (kind={s['kind']}, scope={s['scope']}, version={s['version']})")
        if s["summary"]:
            click.echo(f"    {s['summary']}")
        if s["columns"]:
            click.echo(f"    writes: {', '.join(s['columns'])}")
        for p in s["params"]:
            click.echo(f"    {p['name']}: {p['type']} = {p['default']}" + (f"  -- {p['help']}" if p["help"] else ""))
