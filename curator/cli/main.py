"""``curator`` command line (thin: parse, call the library, print).

Exit codes: 0 ok, 1 run or gate failure, 2 usage / recipe / input error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from curator.cli.common import friendly


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="curator")
def main() -> None:
    """Score, decide and rebalance LLM training data for safety (see README.md)."""


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--run-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/<recipe name>).")
@click.option("--input", "inputs", multiple=True, type=click.Path(), help="Replace the recipe's inputs.")
@click.option("--workers", type=int, default=None, help="Override executor.workers.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None, help="Override executor.kind.")
@click.option("--wait", type=float, default=0.0, help="Seconds to wait if another run holds the run directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars; print only the summary JSON.")
@friendly
def run(recipe, run_dir, inputs, workers, executor, wait, quiet):
    """Run RECIPE (resumes whatever is already finished in the run directory)."""
    from curator.pipeline import run as run_recipe  # start-up time: each command imports only what it uses
    from curator.recipe import load_recipe  # start-up time: each command imports only what it uses

    rec = load_recipe(recipe)
    out = Path(run_dir or Path("runs") / rec.name)
    result = run_recipe(rec, out, inputs=list(inputs) or None, workers=workers, executor=executor,
                        quiet=quiet, wait=wait)
    click.echo(json.dumps({"run_dir": str(result.run_dir), "digest": result.digest, **result.counts}))


@main.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False))
@friendly
def validate(recipes):
    """Check RECIPES and report every problem with its location."""
    from curator.errors import RecipeError  # start-up time: each command imports only what it uses
    from curator.recipe import load_recipe  # start-up time: each command imports only what it uses

    bad = 0
    for path in recipes:
        try:
            rec = load_recipe(path)
            rec.input_paths()
            click.echo(f"ok: {path} ({len(rec.stages)} stages, sha256 {rec.sha256()[:12]})")
        except RecipeError as exc:
            click.echo(f"error: {exc}", err=True)
            bad += 1
    if bad:
        sys.exit(2)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@friendly
def status(run_dir):
    """Show what has finished in RUN_DIR (reads only its files)."""
    from curator.status import run_status  # start-up time: each command imports only what it uses

    click.echo(json.dumps(run_status(Path(run_dir)), indent=2))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@friendly
def verify(run_dir):
    """Re-hash every output of RUN_DIR and re-check the accounting against the manifest."""
    from curator.manifest import verify as verify_run  # start-up time: each command imports only what it uses

    problems = verify_run(Path(run_dir))
    for p in problems:
        click.echo(f"mismatch: {p}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"ok: {run_dir} matches its manifest")


@main.command()
@friendly
def stages():
    """List every registered stage with its parameters, types and defaults."""
    from curator.registry import (  # start-up time: each command imports only what it uses
        get_stage,
        stage_names,
    )
    from curator.stage import describe_params  # start-up time: each command imports only what it uses

    for name in stage_names():
        cls = get_stage(name)
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        click.echo(f"{name}  (kind={cls.kind}, scope={cls.scope}, version={cls.version})")
        if doc:
            click.echo(f"    {doc[0]}")
        for pname, ptype, default in describe_params(cls.Params):
            click.echo(f"    {pname}: {ptype} = {default}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to FILE instead of stdout.")
@friendly
def query(run_dirs, sql, fmt, out):
    """Run SQL over RUN_DIRS (views: samples, scores, ledger, quarantine, added, rollouts, verdicts, dataset)."""
    from curator.cli.tables import render_table  # start-up time: each command imports only what it uses
    from curator.query import run_query  # start-up time: each command imports only what it uses

    table = run_query(list(run_dirs), sql)
    render_table(table, fmt, out)


@main.command()
@click.option("--run-dir", "-o", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--workers", type=int, default=None, help="Override executor.workers.")
@click.option("--quiet", "-q", is_flag=True)
@friendly
def demo(run_dir, workers, quiet):
    """Run the bundled demo recipe end to end on the default model, then report and gate it."""

    from curator.gate import evaluate  # start-up time: each command imports only what it uses
    from curator.pipeline import run as run_recipe  # start-up time: each command imports only what it uses
    from curator.report import write_report  # start-up time: each command imports only what it uses
    from curator.summary import mix_summary  # start-up time: each command imports only what it uses

    recipe = Path(__file__).parent / "demo.yaml"
    result = run_recipe(recipe, Path(run_dir), workers=workers, quiet=quiet)
    report = write_report(result.run_dir)
    verdict = evaluate(result.run_dir)
    c = result.counts
    click.echo(f"""
curator demo finished: {c['rows_in']} rows in, {c['kept']} kept, {c['dropped']} dropped, {c['flagged']} flagged,
{c['quarantined']} quarantined, {c['added']} added by rebalance; gate {'passed' if verdict['passed'] else 'FAILED'}.

  run directory   {result.run_dir}
  cleaned dataset {result.run_dir / 'dataset'}   (datasets.load_from_disk)
  manifest        {result.run_dir / 'manifest.json'}   (dataset digest {result.digest[:16]}...)
  report          {report}

Try:
  curator query {run_dir} "SELECT source, round(avg(risk_sqsd), 3) AS risk, count(*) AS n FROM scores JOIN samples USING (sample_id) GROUP BY source ORDER BY risk DESC"
  curator query {run_dir} "SELECT prompt, hardness FROM scores JOIN samples USING (sample_id) WHERE hardness IS NOT NULL ORDER BY hardness DESC LIMIT 5"
  curator query {run_dir} "SELECT status, stage, reason, count(*) AS rows FROM ledger WHERE status <> 'kept' GROUP BY ALL ORDER BY rows DESC"
""")
    click.echo(mix_summary(result.run_dir))


@main.group()
def directions() -> None:
    """Reference objects of the risk stages (directions, anchor features)."""


@directions.command("build")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Rebuild even if a cached artifact exists.")
@click.option("--quiet", "-q", is_flag=True)
@friendly
def directions_build(recipe, force, quiet):
    """Build (or find cached) every artifact the stages of RECIPE need; print their paths."""
    from curator.plan import build_references  # start-up time: each command imports only what it uses
    from curator.recipe import load_recipe  # start-up time: each command imports only what it uses
    from curator.rundir import RunDir  # start-up time: each command imports only what it uses

    built = build_references(load_recipe(recipe), RunDir(Path(".")), quiet, force)
    if not built:
        click.echo("no stage in this recipe has reference artifacts", err=True)
    click.echo(json.dumps(built, indent=2))


from curator.cli.gate import gate, report  # noqa: E402

main.add_command(gate)
main.add_command(report)
