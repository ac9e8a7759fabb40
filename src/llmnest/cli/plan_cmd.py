"""`llmnest plan`: whether a model fits a target before anything is downloaded, and on what it fits best."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from ..errors import BadInput
from ..plan.memory import DEPLOYED_VLLM, EngineSettings
from .output import console, handle_errors, print_json

if TYPE_CHECKING:
    from ..plan import InstanceFit, Plan

GIB = 1024**3


def _target_count(gpu: str | None, gpus: int | None, instance: str | None, cpu_kv_gib: float | None) -> int:
    if gpus is not None and gpu is None:
        raise BadInput("--gpus needs --gpu NAME (for example --gpu A10 --gpus 4)")
    return sum(x is not None for x in (gpu, instance, cpu_kv_gib))


def _engine_settings(
    gpu: str | None, max_num_seqs: int | None, max_num_batched_tokens: int | None, enforce_eager: bool,
    vllm_version: str,
) -> EngineSettings:
    """The vLLM settings for a --gpu plan; given without --gpu they would be silently ignored, so refuse."""
    given = max_num_seqs is not None or max_num_batched_tokens is not None or enforce_eager
    if (given or vllm_version != DEPLOYED_VLLM) and gpu is None:
        raise BadInput("--max-num-seqs, --max-num-batched-tokens, --enforce-eager and --vllm-version apply to "
                       "--gpu NAME targets; add --gpu")
    for name, value in (("--max-num-seqs", max_num_seqs), ("--max-num-batched-tokens", max_num_batched_tokens)):
        if value is not None and value <= 0:
            raise BadInput(f"{name} must be positive, got {value}")
    if not re.fullmatch(r"v?\d+\.\d+(\.\S*)?", vllm_version.strip()):
        raise BadInput(f"--vllm-version {vllm_version!r} is not a version like 0.11.0")
    return EngineSettings(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                          enforce_eager=enforce_eager, vllm_version=vllm_version.strip())


def _print_plan(plan: Plan, header: str) -> None:
    console.print(f"[bold]{header}[/bold]")
    table = Table(show_header=False, box=None, pad_edge=False)
    rows = [
        ("verdict", f"[{'green' if plan.fits else 'red'}]{plan.reason}[/]"),
        ("weights", f"{plan.weights_bytes / GIB:,.2f} GiB ({plan.dtype})"),
        ("KV per token", f"{plan.kv_bytes_per_token:,} B ({plan.kv_dtype})"
         + (f", {plan.kv_bytes_per_token_per_gpu:,} B per GPU" if plan.gpu_count > 1 else "")),
        ("KV cache", f"{plan.kv_cache_bytes / GIB:,.2f} GiB{' per GPU' if plan.gpu else ''},"
         f" {plan.kv_cache_blocks:,} blocks of {plan.block_size} tokens"),
        ("KV capacity", f"{plan.kv_cache_tokens:,} tokens (as vLLM logs it)"),
        ("max-model-len", f"{plan.requested_max_model_len:,} requested, {plan.max_model_len:,} largest feasible"),
        ("concurrency", f"{plan.max_concurrent_requests:,} requests of full length at once"),
    ]
    if plan.gpu:
        valid = ", ".join(map(str, plan.valid_tensor_parallel_sizes)) or "none"
        rows.append(("tensor parallel", f"{plan.tensor_parallel_size} (sizes that divide and fit: {valid})"))
    for key, value in rows:
        table.add_row(f"[dim]{key}[/dim]", value)
    console.print(table)
    console.print("[dim]arithmetic:[/dim]")
    for line in plan.arithmetic:
        console.print(f"  {line}", markup=False)
    console.print("[dim]facts and estimates:[/dim]")
    for line in plan.provenance:
        console.print(f"  {line}", markup=False)
    if plan.suggestion:
        console.print(f"[yellow]suggestion:[/yellow] {plan.suggestion}")


def _print_ranking(model_key: str, length: int, fits: list[InstanceFit], show_all: bool) -> None:
    title = f"{model_key} at max-model-len {length:,}: instance types {'' if show_all else 'that fit '}cheapest first"
    table = Table("instance type", "GPUs", "price", "region", "taken", "source", "TP", "KV tokens", "max len",
                  "concurrent",
                  *(["verdict"] if show_all else []), title=title)
    for f in fits:
        p, price = f.plan, f.instance.price
        table.add_row(
            f.instance.name, f"{f.instance.gpus} x {f.instance.gpu.key}", price.label(), price.region, price.date,
            "estimate" if price.estimate else price.source,
            str(p.tensor_parallel_size), f"{p.kv_cache_tokens:,}", f"{p.max_model_len:,}",
            str(p.max_concurrent_requests), *(["fits" if p.fits else p.reason] if show_all else []),
        )
    console.print(table)
    if any(f.instance.price.estimate for f in fits):
        console.print("[dim]~ prices are estimates (no Alibaba Cloud price list was reachable): "
                      f"{fits[0].instance.price.source}. Check the console's price preview.[/dim]")


@handle_errors
def plan(
    model: str = typer.Argument(
        ..., help="Catalog model (key, ModelScope/HF id or short name) or a local model directory."),
    gpu: str | None = typer.Option(None, "--gpu", help="GPU model to plan on, e.g. A10, A100-80G, H20."),
    gpus: int | None = typer.Option(None, "--gpus", help="How many of --gpu (default 1)."),
    instance: str | None = typer.Option(
        None, "--instance", help="Alibaba Cloud instance type, e.g. ecs.gn7i-4x.8xlarge."),
    cpu_kv_gib: float | None = typer.Option(None, "--cpu-kv-gib", help="vLLM CPU build: KV cache space in GiB."),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help="Context to serve (default: the catalog's)."),
    gpu_memory_utilization: float | None = typer.Option(
        None, "--gpu-memory-utilization", help="Fraction of GPU memory vLLM may use (default: the catalog's)."),
    tensor_parallel_size: int | None = typer.Option(
        None, "--tensor-parallel-size", help="Tensor parallel (default: the largest the model allows)."),
    dtype: str | None = typer.Option(None, "--dtype", help="Weights: bf16, fp16, fp32, fp8 (default: the model's)."),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV cache: auto, bf16, fp16, fp32, fp8."),
    max_num_seqs: int | None = typer.Option(
        None, "--max-num-seqs", help="vLLM's --max-num-seqs (default: vLLM's for the GPU, 256 or 1024)."),
    max_num_batched_tokens: int | None = typer.Option(
        None, "--max-num-batched-tokens", help="vLLM's --max-num-batched-tokens (default: vLLM's for the GPU)."),
    enforce_eager: bool = typer.Option(
        False, "--enforce-eager", help="Plan for vLLM's --enforce-eager (no CUDA graphs)."),
    vllm_version: str = typer.Option(
        DEPLOYED_VLLM, "--vllm-version", help="vLLM version to plan for (from 0.21 CUDA graph memory is reserved)."),
    show_all: bool = typer.Option(False, "--all", help="When ranking, also list the types that do not fit."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Plan MODEL on a target: weights, KV cache per token and in total, the largest feasible
    max-model-len, concurrency, valid tensor-parallel sizes and a verdict with its arithmetic.

    With no target, rank the Alibaba Cloud instance types that fit, cheapest first.
    """
    from ..plan import evaluate_instances, gpu_model, plan_cpu, plan_gpus, plan_instance, rank_instances, resolve_model
    from ..plan import instance as find_instance

    engine = _engine_settings(gpu, max_num_seqs, max_num_batched_tokens, enforce_eager, vllm_version)
    targets = _target_count(gpu, gpus, instance, cpu_kv_gib)
    if targets > 1:
        raise BadInput("give one target: --gpu NAME [--gpus N], --instance TYPE or --cpu-kv-gib N")
    chosen = resolve_model(model)
    if targets == 0:
        ranked = (evaluate_instances if show_all else rank_instances)(
            chosen, max_model_len, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, kv_dtype=kv_dtype)
        length = max_model_len or chosen.max_model_len
        if json_out:
            print_json({"model": chosen.key, "max_model_len": length, "instances": [f.to_dict() for f in ranked]})
        elif ranked:
            _print_ranking(chosen.key, length, ranked, show_all)
        else:
            console.print(f"no catalog instance type fits {chosen.key} at max-model-len {length:,}; "
                          "try a smaller --max-model-len or --dtype fp8")
        return
    price = None
    if cpu_kv_gib is not None:
        result = plan_cpu(chosen, kv_cache_gib=cpu_kv_gib, max_model_len=max_model_len, dtype=dtype, kv_dtype=kv_dtype)
        header = f"{chosen.key} on the vLLM CPU build"
    elif instance is not None:
        itype = find_instance(instance)
        price = itype.price
        result = plan_instance(chosen, itype, max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                               tensor_parallel_size=tensor_parallel_size, dtype=dtype, kv_dtype=kv_dtype)
        header = (f"{chosen.key} on {itype.name} ({itype.gpus} x {itype.gpu.display_name}, {itype.vcpus} vCPU, "
                  f"{itype.memory_gib} GiB; {price.label()}{' estimate' if price.estimate else ''}, "
                  f"{price.region}, {price.date})")
    else:
        card = gpu_model(gpu or "")
        result = plan_gpus(chosen, card, gpus if gpus is not None else 1, max_model_len=max_model_len,
                           gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                           dtype=dtype, kv_dtype=kv_dtype, engine=engine)
        header = (f"{chosen.key} on {result.gpu_count} x {card.display_name} ({card.memory_mib:,} MiB in nvidia-smi,"
                  f" {card.cuda_total_mib:,} MiB as CUDA reports it)")
    if json_out:
        print_json({**result.to_dict(), **({"price": price.model_dump()} if price else {})})
    else:
        _print_plan(result, header)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
