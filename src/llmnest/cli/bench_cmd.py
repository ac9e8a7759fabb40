"""`llmnest bench`: load-test a deployment or any OpenAI-compatible URL; `llmnest bench compare`."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import BadInput, ExitCode
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


@dataclass
class BenchTarget:
    base_url: str
    api_key: str | None
    model: str | None
    tokenizer: str | None
    price_per_hour: float | None
    deployment: str | None


def resolve_target(name: str | None, base_url: str | None, api_key: str | None, model: str | None,
                   tokenizer: str | None, price: float | None) -> BenchTarget:
    """A URL as given, or a deployment's URL (its first endpoint), key, served model, weights folder
    (the tokenizer) and hourly price."""
    if base_url:
        if name:
            raise BadInput("give a deployment NAME or --base-url, not both")
        return BenchTarget(base_url.rstrip("/"), api_key, model, tokenizer, price, None)
    from .. import lifecycle, state

    dep = state.get(state.resolve_name(name))
    spec = dep.spec
    key = api_key or state.api_key(dep.name)
    endpoints = lifecycle.endpoints(dep, key)
    if not endpoints:
        raise BadInput(f"deployment {dep.name!r} has no endpoint yet (status {dep.status}); see `llmnest status {dep.name}`")
    return BenchTarget(
        endpoints[0].base_url.rstrip("/"),
        key,
        model or spec.served_model_name,
        tokenizer or spec.model_path or _catalog_tokenizer(spec.model),
        price if price is not None else lifecycle.price_per_hour(dep),
        dep.name,
    )


def _catalog_tokenizer(model: str) -> str | None:
    """The tokenizer folder of a catalog model whose weights are elsewhere (a cloud deployment)."""
    from ..catalog import find_model
    from ..sources import fetch_tokenizer

    entry = find_model(model)
    return str(fetch_tokenizer(entry, say)) if entry else None


def stage_sizes(rates: list[float], duration: float | None, num_prompts: int | None) -> list[int]:
    if num_prompts is not None:
        if num_prompts < 1:
            raise BadInput("--num-prompts must be at least 1")
        return [num_prompts] * len(rates)
    from ..bench.schedule import requests_for

    return [requests_for(q, duration if duration is not None else 60.0) for q in rates]


def load_prompts(dataset: str, path: str | None, tokenizer: Any, total: int, seed: int,
                 input_len: int | None, output_len: int | None) -> list[Any]:
    """`total` prompts of the chosen dataset, sampled with `seed`."""
    from ..bench import datasets
    from ..home import home

    if dataset == "random":
        if path:
            raise BadInput("--dataset random makes its own prompts; drop --dataset-path")
        if tokenizer is None:
            raise BadInput("--dataset random needs a tokenizer: pass --tokenizer MODEL_DIR (a folder with tokenizer.json)")
        return datasets.sample_random(tokenizer, total, input_len or 1024, output_len or 128, seed)
    if dataset == "jsonl":
        if not path:
            raise BadInput("--dataset jsonl needs --dataset-path FILE.jsonl")
        file = Path(path).expanduser()
        if not file.is_file():
            raise BadInput(f"dataset file {file} does not exist")
        return datasets.sample_jsonl(datasets.read_jsonl(file), total, seed, tokenizer, output_len)
    if tokenizer is None:
        raise BadInput("--dataset sharegpt needs a tokenizer to count tokens: pass --tokenizer MODEL_DIR")
    file = datasets.sharegpt_path(path, home() / "datasets", say)
    return datasets.sample_sharegpt(datasets.read_sharegpt(file), tokenizer, total, seed, output_len)


class RichProgress:
    """One live progress bar per stage on stderr; the stage's result block on stdout when it ends."""

    def __init__(self, show_blocks: bool) -> None:
        self.show_blocks = show_blocks
        self.bar: Any = None
        self.failed = 0

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
    from ..bench import metrics, runner
    from ..bench.datasets import load_tokenizer
    from ..bench.request import Client
    from ..bench.schedule import parse_rates

    if endpoint not in ("chat", "completions"):
        raise BadInput(f"--endpoint must be chat or completions (got {endpoint})")
    if dataset not in ("sharegpt", "random", "jsonl"):
        raise BadInput(f"--dataset must be sharegpt, random or jsonl (got {dataset})")
    if timeout <= 0 or warmup < 0 or (max_concurrency is not None and max_concurrency < 1):
        raise BadInput("--timeout must be > 0, --warmup >= 0 and --max-concurrency >= 1")
    if not burstiness > 0:
        raise BadInput(f"--burstiness must be greater than 0 (got {burstiness})")
    if workers is not None and workers < 1:
        raise BadInput("--workers must be at least 1")
    if output_len is not None and output_len < 1:
        raise BadInput("--output-len must be at least 1")
    rates = parse_rates(qps)
    slo = metrics.parse_goodput(goodput)
    sizes = stage_sizes(rates, duration, num_prompts)
    target = resolve_target(name, base_url, api_key, model, tokenizer, price_per_hour)
    tok = load_tokenizer(target.tokenizer) if target.tokenizer else None
    prompts = load_prompts(dataset, dataset_path, tok, sum(sizes), seed, input_len, output_len)
    stages, start = [], 0
    for rate, size in zip(rates, sizes):
        stages.append(runner.Stage(rate, prompts[start:start + size]))
        start += size
    ignore = ignore_eos if ignore_eos is not None else dataset == "random"
    client = Client(target.base_url, target.api_key, target.model, endpoint,  # type: ignore[arg-type]
                    timeout, ignore, temperature)
    plan = runner.BenchPlan(stages, burstiness, max_concurrency, warmup, seed, slo, target.price_per_hour, workers)
    say(f"benchmarking {target.base_url} ({sum(sizes)} requests in {len(stages)} stage(s), dataset {dataset})")
    results = runner.run(client, plan, tok, RichProgress(show_blocks=not json_out))
    config = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S"),
        "backend": "openai-chat" if endpoint == "chat" else "openai",
        "base_url": target.base_url, "model_id": client.model, "deployment": target.deployment,
        "tokenizer_id": target.tokenizer, "endpoint": endpoint, "dataset_name": dataset,
        "dataset_path": dataset_path, "seed": seed, "ignore_eos": ignore, "temperature": temperature,
        "timeout_s": timeout, "goodput_ms": slo or None,
    }
    if out is not None:
        _write_outputs(out, config, results)
    from ..bench.report import plain, sweep_table

    if json_out:
        print_json(plain({**config, "out": str(out) if out else None,
                          "stages": [{**r.result, "interrupted": r.interrupted} for r in results]}))
    elif len(results) > 1:
        console.print(sweep_table([r.result for r in results]))
    if any(r.interrupted for r in results):
        raise typer.Exit(ExitCode.INTERRUPTED)
    if not any(r.result["completed"] for r in results):
        err.print("[bold red]error:[/bold red] no request succeeded; see the failures above")
        raise typer.Exit(ExitCode.FAILED)


def _write_outputs(out: Path, config: dict[str, Any], results: list[Any]) -> None:
    from dataclasses import asdict

    from ..bench.charts import run_charts
    from ..bench.report import write_run

    files = write_run(out, config, results)
    charts = run_charts([r.result for r in results], [[asdict(x) for x in r.records] for r in results], out / "charts")
    say(f"wrote {len(files)} result files and {len(charts)} charts under {out}")


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
