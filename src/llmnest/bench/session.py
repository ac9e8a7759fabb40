"""One benchmark as a library call: `run(BenchRequest(...), progress)` checks the request, resolves the
endpoint, loads the prompts, runs the stages and writes the outputs. The CLI and the console are thin
callers that only build the request and show the progress and the result."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import BadInput
from . import metrics, runner
from .endpoint import BenchEndpoint, resolve_endpoint
from .prompt_sources import PromptQuery, check_dataset, load_prompts
from .schedule import parse_rates, requests_for


@dataclass(frozen=True)
class BenchRequest:
    """Everything a run is asked to do; the defaults are `llmnest bench`'s."""

    name: str | None = None  # a deployment, or
    base_url: str | None = None  # any OpenAI-compatible base URL
    api_key: str | None = None
    model: str | None = None
    endpoint: Literal["chat", "completions"] = "chat"
    dataset: str = "sharegpt"
    dataset_path: str | None = None
    input_len: int | None = None
    output_len: int | None = None
    qps: str = "10,20,50"
    duration: float | None = None
    num_prompts: int | None = None
    burstiness: float = 1.0
    max_concurrency: int | None = None
    ignore_eos: bool | None = None
    temperature: float | None = None
    warmup: int = 0
    seed: int = 0
    timeout: float = 300.0
    goodput: str | None = None
    price_per_hour: float | None = None
    tokenizer: str | None = None
    out: Path | None = None
    workers: int | None = None

    def check(self) -> None:
        """Refuse what can be refused before anything is resolved or sent."""
        if self.endpoint not in ("chat", "completions"):
            raise BadInput(f"--endpoint must be chat or completions (got {self.endpoint})")
        check_dataset(self.dataset)
        if self.timeout <= 0 or self.warmup < 0 or (self.max_concurrency is not None and self.max_concurrency < 1):
            raise BadInput("--timeout must be > 0, --warmup >= 0 and --max-concurrency >= 1")
        if not self.burstiness > 0:
            raise BadInput(f"--burstiness must be greater than 0 (got {self.burstiness})")
        if self.workers is not None and self.workers < 1:
            raise BadInput("--workers must be at least 1")
        if self.output_len is not None and self.output_len < 1:
            raise BadInput("--output-len must be at least 1")

    def stage_sizes(self) -> list[int]:
        """Requests per stage: --num-prompts each, else QPS x --duration (60 s by default)."""
        rates = parse_rates(self.qps)
        if self.num_prompts is not None:
            if self.num_prompts < 1:
                raise BadInput("--num-prompts must be at least 1")
            return [self.num_prompts] * len(rates)
        return [requests_for(q, self.duration if self.duration is not None else 60.0) for q in rates]


@dataclass
class BenchRun:
    """What a run measured: its configuration (as `vllm bench serve` records it) and one result per stage."""

    config: dict[str, Any]
    stages: list[runner.StageResult] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return any(r.interrupted for r in self.stages)

    @property
    def completed(self) -> bool:
        return any(r.result["completed"] for r in self.stages)


def run(request: BenchRequest, progress: runner.Progress) -> BenchRun:
    """Run the benchmark `request` describes, reporting to `progress`; outputs under `request.out` if given."""
    from ..home import home
    from .datasets import load_tokenizer
    from .request import Client

    request.check()
    rates = parse_rates(request.qps)
    slo = metrics.parse_goodput(request.goodput)
    sizes = request.stage_sizes()
    dest = resolve_endpoint(request.name, request.base_url, request.api_key, request.model, request.tokenizer,
                              request.price_per_hour, progress.note)
    tok = load_tokenizer(dest.tokenizer) if dest.tokenizer else None
    query = PromptQuery(request.dataset_path, tok, sum(sizes), request.seed, request.input_len, request.output_len,
                        home() / "datasets", progress.note)
    prompts = load_prompts(request.dataset, query)
    stages, start = [], 0
    for rate, size in zip(rates, sizes):
        stages.append(runner.Stage(rate, prompts[start:start + size]))
        start += size
    ignore = request.ignore_eos if request.ignore_eos is not None else request.dataset == "random"
    client = Client(dest.base_url, dest.api_key, dest.model, request.endpoint, request.timeout, ignore,
                    request.temperature)
    plan = runner.BenchPlan(stages, request.burstiness, request.max_concurrency, request.warmup, request.seed, slo,
                            dest.price_per_hour, request.workers)
    progress.note(f"benchmarking {dest.base_url} ({sum(sizes)} requests in {len(stages)} stage(s), "
                  f"dataset {request.dataset})")
    done = BenchRun(_config(request, dest, client.model, ignore, slo), runner.run(client, plan, tok, progress))
    if request.out is not None:
        _write_outputs(request.out, done, progress)
    return done


def _config(request: BenchRequest, dest: BenchEndpoint, model: str | None, ignore_eos: bool,
            slo: dict[str, float]) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S"),
        "backend": "openai-chat" if request.endpoint == "chat" else "openai",
        "base_url": dest.base_url, "model_id": model, "deployment": dest.deployment,
        "tokenizer_id": dest.tokenizer, "endpoint": request.endpoint, "dataset_name": request.dataset,
        "dataset_path": request.dataset_path, "seed": request.seed, "ignore_eos": ignore_eos,
        "temperature": request.temperature, "timeout_s": request.timeout, "goodput_ms": slo or None,
    }


def _write_outputs(out: Path, done: BenchRun, progress: runner.Progress) -> None:
    from .charts import run_charts
    from .report import write_run

    files = write_run(out, done.config, done.stages)
    charts = run_charts([r.result for r in done.stages], [[asdict(x) for x in r.records] for r in done.stages],
                        out / "charts")
    progress.note(f"wrote {len(files)} result files and {len(charts)} charts under {out}")
