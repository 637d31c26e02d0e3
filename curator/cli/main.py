"""``curator`` command line (thin: parse, call the library, print).

Exit codes: 0 ok, 1 run or gate failure, 2 usage / recipe / input error.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from curator import __version__
from curator.cli.common import WORKERS, RunDirParam, friendly


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="curator", message="%(prog)s (safety-curator) %(version)s")
def main() -> None:
    """Score, decide and rebalance LLM training data for safety (see README.md).

    Shell completion: eval "$(_CURATOR_COMPLETE=bash_source curator)" (zsh_source, fish_source)."""


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--run-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/<recipe name>).")
@click.option("--input", "inputs", multiple=True, metavar="[NAME=]PATH",
              help="Replace the recipe input named NAME (a bare PATH: the input of a one-input recipe); repeatable.")
@click.option("--workers", type=WORKERS, default=None, help="Override executor.workers.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None, help="Override executor.kind.")
@click.option("--wait", type=float, default=0.0, help="Seconds to wait if another run holds the run directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars; print only the summary JSON.")
@friendly
def run(recipe, run_dir, inputs, workers, executor, wait, quiet):
    """Run RECIPE (resumes whatever is already finished in the run directory)."""
    from curator.pipeline import run as run_recipe  # start-up time: each command imports only what it uses
    from curator.query import connect  # start-up time: each command imports only what it uses
    from curator.recipe import load_recipe  # start-up time: each command imports only what it uses
    from curator.run_warnings import run_warnings  # start-up time: each command imports only what it uses

    rec = load_recipe(recipe)
    out = Path(run_dir or Path("runs") / rec.name)
    def warn(result) -> None:
        for warning in run_warnings(connect(result.run_dir), result.manifest, result.run_dir):
            click.echo(f"warning: {warning}", err=True)

    result = run_recipe(rec, out, inputs=list(inputs) or None, workers=workers, executor=executor,
                        quiet=quiet, wait=wait, on_finish=warn)
    click.echo(json.dumps({"run_dir": str(result.run_dir), "digest": result.digest, **result.counts}))


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=RunDirParam())
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "jsonl", "parquet"]), default="table",
              help="json: one JSON array; jsonl: one JSON object per line; csv: nested columns (messages) as JSON "
                   "text.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write to FILE instead of stdout.")
@friendly
def query(run_dirs, sql, fmt, out):
    """Run SQL over RUN_DIRS (views: samples, scores, ledger, quarantine, added, rollouts, verdicts, dataset).
    With several run directories every view has a run_id column: the directory's name, or where two names are
    the same the end of its path that tells them apart (a/sft, b/sft)."""
    from curator.cli.tables import render_table  # start-up time: each command imports only what it uses
    from curator.query import run_query  # start-up time: each command imports only what it uses

    table = run_query(list(run_dirs), sql)
    render_table(table, fmt, out)


@main.command()
@click.option("--run-dir", "-o", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--workers", type=WORKERS, default=None, help="Override executor.workers.")
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
    verdict = evaluate(result.run_dir)
    report = write_report(result.run_dir)  # after the gate: the report shows its verdict
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


from curator.cli.checks import stages, status, validate, verify  # noqa: E402
from curator.cli.gate import gate, report  # noqa: E402

for command in (validate, status, verify, stages, gate, report):
    main.add_command(command)
