"""`llmnest bench`: load-test a deployment or any OpenAI-compatible URL; `llmnest bench compare`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import ExitCode
from .output import console, err, handle_errors, print_json, say


class _DefaultRun(TyperGroup):
    """`llmnest bench ARGS` means `llmnest bench run ARGS` unless ARGS start with a subcommand or --help."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


bench_app = typer.Typer(
    cls=_DefaultRun,
    help="Load-test an endpoint at fixed QPS (vllm bench serve's definitions), with charts and cost per 1M tokens.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


class RichProgress:
    """One live progress bar per stage on stderr; the stage's result block on stdout when it ends."""

    def __init__(self, show_blocks: bool) -> None:
        self.show_blocks = show_blocks
        self.bar: Any = None
        self.failed = 0

    def note(self, text: str) -> None:
        say(text)

    def stage_started(self, qps: float, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.failed = 0
        self.bar = Progress(TextColumn("[bold]QPS {task.fields[qps]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
                            console=err, refresh_per_second=4, transient=False)
        self.bar.start()
        label = "inf" if math.isinf(qps) else f"{qps:g}"
        self.task = self.bar.add_task("stage", total=total, qps=label, note="")

    def request_done(self, record: Any, in_flight: int) -> None:
        self.failed += not record.ok
        note = f"{in_flight} in flight" + (f", {self.failed} failed" if self.failed else "")
        self.bar.update(self.task, advance=1, note=note)

    def counts(self, done: int, failed: int, in_flight: int) -> None:
        note = f"{in_flight} in flight" + (f", {failed} failed" if failed else "")
        self.bar.update(self.task, completed=done + failed, note=note)

    def stage_done(self, result: Any) -> None:
        from ..bench.report import result_block

        self.bar.stop()
        for warning in result.result.get("client_warnings") or []:
            err.print(f"[bold yellow]warning:[/bold yellow] {warning}", markup=True, highlight=False)
        if result.interrupted:
            err.print("[yellow]interrupted: the report covers what was measured so far[/yellow]")
        if self.show_blocks:
            console.print(result_block(result.result), markup=False)


@bench_app.command("run", help="Load-test NAME (a deployment) or --base-url URL; `llmnest bench NAME` is the same.")
@handle_errors
def run(
    name: str | None = typer.Argument(None, help="Deployment to test (default: the only one)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Any OpenAI-compatible base URL, e.g. http://host:8080/v1."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="LLMNEST_BENCH_API_KEY",
                                       help="Sent as a Bearer token (a deployment's own key by default)."),
    model: str | None = typer.Option(None, "--model", help="Model to ask for (default: the deployment's, or the server's first)."),
    endpoint: str = typer.Option("chat", "--endpoint", help="chat (/chat/completions) or completions (/completions)."),
    dataset: str = typer.Option("sharegpt", "--dataset", help="sharegpt, random or jsonl."),
    dataset_path: str | None = typer.Option(None, "--dataset-path", help="ShareGPT JSON or JSONL file (ShareGPT is downloaded from ModelScope when left out)."),
    input_len: int | None = typer.Option(None, "--input-len", help="random: prompt tokens (default 1024)."),
    output_len: int | None = typer.Option(None, "--output-len", help="max_tokens for every request (random default 128; sharegpt: the reference answer's length)."),
    qps: str = typer.Option("10,20,50", "--qps", help="Comma-separated request rates, one stage each; 'inf' sends all at once."),
    duration: float | None = typer.Option(None, "--duration", help="Seconds per stage: QPS x SECONDS requests (default 60)."),
    num_prompts: int | None = typer.Option(None, "--num-prompts", help="Requests per stage instead of --duration."),
    burstiness: float = typer.Option(1.0, "--burstiness", help="1 = Poisson, <1 burstier, >1 more even (Gamma); inf = constant spacing."),
    max_concurrency: int | None = typer.Option(None, "--max-concurrency", help="At most N requests in flight (default: no limit)."),
    ignore_eos: bool | None = typer.Option(None, "--ignore-eos/--no-ignore-eos", help="Generate max_tokens every time (default on for random, off otherwise)."),
    temperature: float | None = typer.Option(None, "--temperature", help="Sampling temperature (default: the server's)."),
    warmup: int = typer.Option(0, "--warmup", help="Unmeasured requests sent before the first stage."),
    seed: int = typer.Option(0, "--seed", help="Seed of prompt sampling and arrival times."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds one request may take before it counts as failed."),
    goodput: str | None = typer.Option(None, "--goodput", help="SLOs for goodput, e.g. ttft:500,tpot:50,e2el:8000 (ms)."),
    price_per_hour: float | None = typer.Option(None, "--price-per-hour", help="Hourly price of the server, for cost per 1M tokens."),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="Model folder with tokenizer.json (a deployment's weights by default)."),
    out: Path | None = typer.Option(None, "--out", help="Write stage JSON, per-request records and PNG charts here."),
    workers: int | None = typer.Option(None, "--workers", help="Client processes per stage, sharing one schedule "
                                       "(default: automatic from the rate, the output lengths and the CPU count)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document (progress stays on stderr)."),
) -> None:
    """Send requests at each QPS and report TTFT, TPOT, ITL, E2EL, throughput, goodput and cost."""
    from .. import bench
    from ..bench.report import plain, sweep_table

    request = bench.BenchRequest(
        name=name, base_url=base_url, api_key=api_key, model=model, endpoint=endpoint,  # type: ignore[arg-type]
        dataset=dataset, dataset_path=dataset_path, input_len=input_len, output_len=output_len, qps=qps,
        duration=duration, num_prompts=num_prompts, burstiness=burstiness, max_concurrency=max_concurrency,
        ignore_eos=ignore_eos, temperature=temperature, warmup=warmup, seed=seed, timeout=timeout, goodput=goodput,
        price_per_hour=price_per_hour, tokenizer=tokenizer, out=out, workers=workers,
    )
    done = bench.run(request, RichProgress(show_blocks=not json_out))
    if json_out:
        print_json(plain({**done.config, "out": str(out) if out else None,
                          "stages": [{**r.result, "interrupted": r.interrupted} for r in done.stages]}))
    elif len(done.stages) > 1:
        console.print(sweep_table([r.result for r in done.stages]))
    if done.interrupted:
        raise typer.Exit(ExitCode.INTERRUPTED)
    if not done.completed:
        err.print("[bold red]error:[/bold red] no request succeeded; see the failures above")
        raise typer.Exit(ExitCode.FAILED)


@bench_app.command("compare")
@handle_errors
def compare(
    runs: list[Path] = typer.Argument(..., help="Run directories written by `llmnest bench --out`."),
    out: Path | None = typer.Option(None, "--out", help="Write comparison charts into this directory."),
    json_out: bool = typer.Option(False, "--json", help="Print the runs' stage results as one JSON document."),
) -> None:
    """Put benchmark runs side by side: one table row per run and stage, charts with one line per run."""
    from ..bench.compare import compare_charts, compare_table, load_runs
    from ..bench.report import plain

    loaded = load_runs(runs)
    if json_out:
        print_json(plain(loaded))
    else:
        console.print(compare_table(loaded))
    if out is not None:
        paths = compare_charts(loaded, out)
        say(f"wrote {len(paths)} charts under {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
