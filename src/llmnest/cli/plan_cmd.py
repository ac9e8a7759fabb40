"""`llmnest plan`: whether a model fits a target before anything is downloaded, and on what it fits best."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any, Optional

import typer
import yaml
from rich.table import Table

from ..engines import default_image
from ..errors import BadInput
from ..plan.hardware import GpuModel, find_gpu, gpu_model
from ..plan.memory import DEPLOYED_VLLM, EngineSettings, image_vllm_version
from ..spec import parse_sets
from ..spec_builder import UpRequest
from ..targets import registry
from . import target_options
from .output import console, handle_errors, print_json

if TYPE_CHECKING:
    from ..targets import Target

GIB = 1024**3


def _target_count(gpu: str | None, gpus: int | None, instance: str | None, cpu_kv_gib: float | None) -> int:
    if gpus is not None and gpu is None:
        raise BadInput("--gpus needs --gpu NAME (for example --gpu A10 --gpus 4)")
    return sum(x is not None for x in (gpu, instance, cpu_kv_gib))


INTERCONNECTS = ("nvlink", "pcie")


def _instance_catalog() -> Target:
    """The target whose instance types and prices `plan` ranks: the first registered that has a catalog."""
    from .. import targets

    found = [d.name for d in targets.registry.declarations() if d.instances]
    if not found:
        raise BadInput("no registered target has an instance catalog: plan on --gpu NAME or --cpu-kv-gib N")
    return targets.get(found[0])


def _env(sets: list[str]) -> dict[str, str]:
    """`--set env.NAME=VALUE` pairs; plan takes only the engine's environment through --set."""
    out: dict[str, str] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("env.") or len(key) == 4:
            raise BadInput(f"--set {item!r}: plan takes --set env.NAME=VALUE (engine flags have options of their own)")
        out[key[4:]] = value
    return out


def _engine_settings(
    gpu: str | None, cpu: bool, max_num_seqs: int | None, max_num_batched_tokens: int | None,
    enforce_eager: bool, vllm_version: str | None, interconnect: str | None, env: dict[str, str],
) -> EngineSettings:
    """The vLLM a GPU plan is for: the given version, else the engine llmnest runs there (the local docker
    image for --gpu, the cloud image for instance types). GPU settings on a CPU plan are refused, not ignored."""
    given = (max_num_seqs is not None or max_num_batched_tokens is not None or enforce_eager or env
             or vllm_version is not None or interconnect is not None)
    if given and cpu:
        raise BadInput("--max-num-seqs, --max-num-batched-tokens, --enforce-eager, --vllm-version, --interconnect "
                       "and --set apply to GPU targets, not --cpu-kv-gib")
    for name, value in (("--max-num-seqs", max_num_seqs), ("--max-num-batched-tokens", max_num_batched_tokens)):
        if value is not None and value <= 0:
            raise BadInput(f"{name} must be positive, got {value}")
    if vllm_version is not None and not re.fullmatch(r"v?\d+\.\d+(\.\S*)?", vllm_version.strip()):
        raise BadInput(f"--vllm-version {vllm_version!r} is not a version like 0.11.0")
    if interconnect is not None and interconnect.lower() not in INTERCONNECTS:
        raise BadInput(f"--interconnect {interconnect!r}: use nvlink or pcie (leave it out when unknown)")
    version = vllm_version.strip() if vllm_version else (
        image_vllm_version(default_image("vllm")) if gpu else DEPLOYED_VLLM)
    # An image llmnest runs ships FlashInfer; a version given by hand may be a pip install without it (< 0.11.1).
    return EngineSettings(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                          enforce_eager=enforce_eager, vllm_version=version, env=env,
                          interconnect=interconnect.lower() if interconnect else None,
                          flashinfer_installed=None if vllm_version else True)


def _card(gpu: str, memory_gib: float | None) -> tuple[GpuModel, int | None]:
    """The catalog card, or a card known only by --gpu-memory-gib (the total CUDA reports, in GiB)."""
    if memory_gib is not None and memory_gib <= 0:
        raise BadInput(f"--gpu-memory-gib must be positive, got {memory_gib}")
    memory = round(memory_gib * GIB) if memory_gib else None
    known = find_gpu(gpu)
    if known is not None:
        return known, memory
    if memory is None:
        try:
            gpu_model(gpu)
        except BadInput as exc:
            raise BadInput(f"{exc} A card not in the catalog: add --gpu-memory-gib N (its total as CUDA reports "
                           "it).") from exc
    mib = memory // 2**20
    return GpuModel(key=gpu, display_name=gpu, memory_gb=max(1, round(memory_gib)), memory_mib=mib,
                    cuda_total_mib=mib, cuda_total_source="--gpu-memory-gib", compute_capability=8.0), memory


def _print_plan(plan: dict[str, Any], header: str) -> None:
    """A memory plan (`Plan.to_dict()`)."""
    console.print(f"[bold]{header}[/bold]")
    table = Table(show_header=False, box=None, pad_edge=False)
    rows = [
        ("verdict", f"[{'green' if plan['fits'] else 'red'}]{plan['reason']}[/]"),
        ("weights", f"{plan['weights_bytes'] / GIB:,.2f} GiB ({plan['dtype']})"),
        ("KV per token", f"{plan['kv_bytes_per_token']:,} B ({plan['kv_dtype']})"
         + (f", {plan['kv_bytes_per_token_per_gpu']:,} B per GPU" if plan['gpu_count'] > 1 else "")),
        ("KV cache", f"{plan['kv_cache_bytes'] / GIB:,.2f} GiB{' per GPU' if plan['gpu'] else ''},"
         f" {plan['kv_cache_blocks']:,} blocks of {plan['block_size']} tokens"),
        ("KV capacity", f"{plan['kv_cache_tokens']:,} tokens (as vLLM logs it)"),
        ("max-model-len", f"{plan['requested_max_model_len']:,} requested, {plan['max_model_len']:,} largest feasible"),
        ("concurrency", f"{plan['max_concurrent_requests']:,} requests of full length at once"),
    ]
    if plan["gpu"]:
        valid = ", ".join(map(str, plan["valid_tensor_parallel_sizes"])) or "none"
        rows.append(("tensor parallel", f"{plan['tensor_parallel_size']} (sizes that divide and fit: {valid})"))
    for key, value in rows:
        table.add_row(f"[dim]{key}[/dim]", value)
    console.print(table)
    console.print("[dim]arithmetic:[/dim]")
    for line in plan["arithmetic"]:
        console.print(f"  {line}", markup=False)
    console.print("[dim]facts and estimates:[/dim]")
    for line in plan["provenance"]:
        console.print(f"  {line}", markup=False)
    if plan["suggestion"]:
        console.print(f"[yellow]suggestion:[/yellow] {plan['suggestion']}")


def _print_ranking(model_key: str, length: int, fits: list[Any], show_all: bool) -> None:
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


MARKS = {True: "ok  ", False: "FAIL", None: " -- "}


def _print_checks(checks: list[dict[str, Any]]) -> None:
    for c in checks:
        console.print(f"  [{MARKS[c['ok']]}] {c['check']:<20} {c['detail']}", markup=False, highlight=False)


def _print_target_plan(result: dict[str, Any]) -> None:
    """A target's plan by its kind (Target.plan): a memory plan, instance types, a table, or the spec."""
    kind = result.get("kind")
    if kind == "memory":
        p = result["plan"]
        _print_plan(p, f"{p['model']} on {p['target']}")
    elif kind == "instances":
        table = Table("instance type", "GPUs", "price", "TP", "KV tokens", "concurrent",
                      title=f"{result['spec']}: instance types that fit, cheapest first")
        for f in result["instances"]:
            table.add_row(f["instance_type"], f"{f['gpus']} x {f['gpu']}", f["price_label"],
                          str(f["plan"]["tensor_parallel_size"]), f"{f['plan']['kv_cache_tokens']:,}",
                          str(f["plan"]["max_concurrent_requests"]))
        console.print(table)
        console.print("preflight:")
        _print_checks(result["preflight"])
    elif kind == "table":
        table = Table(*result["columns"], title=result["title"])
        for row in result["rows"]:
            table.add_row(*row)
        console.print(table)
        if result["checks"]:
            console.print("cluster:")
            _print_checks(result["checks"])
        for line in result["notes"]:
            console.print(line, markup=False, highlight=False)
    elif kind == "spec":
        console.print(result["yaml"].rstrip(), markup=False, highlight=False)
    else:
        console.print(yaml.safe_dump(result, sort_keys=False).rstrip(), markup=False, highlight=False)


# plan's own flags that describe a plan without a target (given: not their default)
PLANNER_FLAGS = {"gpu": "--gpu", "gpus": "--gpus", "instance": "--instance", "cpu_kv_gib": "--cpu-kv-gib",
                 "gpu_memory_utilization": "--gpu-memory-utilization", "tensor_parallel_size": "--tensor-parallel-size",
                 "dtype": "--dtype", "kv_dtype": "--kv-dtype", "max_num_seqs": "--max-num-seqs",
                 "max_num_batched_tokens": "--max-num-batched-tokens", "enforce_eager": "--enforce-eager",
                 "vllm_version": "--vllm-version", "gpu_memory_gib": "--gpu-memory-gib",
                 "interconnect": "--interconnect", "show_all": "--all"}


def _plan_on_target(target: str, model: str, max_model_len: int | None, sets: list[str], options: dict[str, Any],
                    planner: dict[str, Any], json_out: bool) -> None:
    """`plan MODEL --target NAME`: what `up` would make of the same flags, as the target plans it."""
    from .. import lifecycle

    given = [PLANNER_FLAGS[k] for k, v in planner.items() if v not in (None, False)]
    if given:
        raise BadInput(f"{', '.join(given)} plan{'s' if len(given) == 1 else ''} without a target; with --target, "
                       "plan takes up's flags: engine settings as --set KEY=VALUE (e.g. --set "
                       "gpu_memory_utilization=0.9), or drop --target")
    req = UpRequest(model=model, max_model_len=max_model_len, sets=parse_sets(sets), target=target, options=options)
    result = lifecycle.plan(req)
    if json_out:
        print_json(result)
    else:
        _print_target_plan(result)


def _refuse_without_target(options: dict[str, Any]) -> None:
    """A target's option given without --target: one line naming the target it belongs to."""
    decls = registry.declarations()
    flags = [next(o.flag for d in decls if (o := d.option(f))) for f in options]
    owners = [d.name for d in decls if d.option(next(iter(options)))]
    one = len(flags) == 1
    raise BadInput(f"{', '.join(flags)} {'is' if one else 'are'} for --target {registry.choices(owners)}: add "
                   f"--target {owners[0]} to plan as `up` would there")


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
    vllm_version: str | None = typer.Option(
        None, "--vllm-version",
        help="vLLM version to plan for (default: the engine llmnest runs there: the local GPU image's tag for "
             f"--gpu, the cloud image's ({DEPLOYED_VLLM}) for instance types). Decides the sampler path, model "
             "runner, NCCL and CUDA graph terms; before 0.11.1 FlashInfer's sampler is assumed only with "
             "--set env.VLLM_USE_FLASHINFER_SAMPLER=1 (an image ships it, a pip install does not)."),
    gpu_memory_gib: float | None = typer.Option(
        None, "--gpu-memory-gib",
        help="With --gpu: the card's memory as CUDA reports it, in GiB (a card not in the catalog needs it)."),
    interconnect: str | None = typer.Option(
        None, "--interconnect", help="nvlink or pcie between the GPUs (default: the card's; unknown plans the "
                                     "larger NCCL figure)."),
    sets: list[str] = typer.Option(
        [], "--set", help="env.NAME=VALUE: the engine's environment, e.g. env.VLLM_USE_FLASHINFER_SAMPLER=1 (with "
                          "--target: up's KEY=VALUE)."),
    show_all: bool = typer.Option(False, "--all", help="When ranking, also list the types that do not fit."),
    target: Optional[str] = typer.Option(  # noqa: UP045 - typer reads it
        None, "--target", help=f"Plan as `up --target NAME` would, with up's flags (MODEL, --max-model-len, --set, "
                               f"the target's options): {target_options.TARGET_HELP}."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    **given: Any,  # every target's options (target_options): the signature below declares them
) -> None:
    """Plan MODEL on a target: weights, KV cache per token and in total, the largest feasible
    max-model-len, concurrency, valid tensor-parallel sizes and a verdict with its arithmetic.

    With no target, rank the Alibaba Cloud instance types that fit, cheapest first.

    With --target NAME: what `up --target NAME` would make of the same flags, as that target plans it.
    """
    from ..plan import plan_cpu, plan_gpus, resolve_model

    options = target_options.given(given, sys.stdin)
    if target is not None:
        planner = {"gpu": gpu, "gpus": gpus, "instance": instance, "cpu_kv_gib": cpu_kv_gib,
                   "gpu_memory_utilization": gpu_memory_utilization, "tensor_parallel_size": tensor_parallel_size,
                   "dtype": dtype, "kv_dtype": kv_dtype, "max_num_seqs": max_num_seqs,
                   "max_num_batched_tokens": max_num_batched_tokens, "enforce_eager": enforce_eager,
                   "vllm_version": vllm_version, "gpu_memory_gib": gpu_memory_gib, "interconnect": interconnect,
                   "show_all": show_all}
        _plan_on_target(target, model, max_model_len, sets, options, planner, json_out)
        return
    if options:
        _refuse_without_target(options)
    if gpu_memory_gib is not None and gpu is None:
        raise BadInput("--gpu-memory-gib needs --gpu NAME (the card it sizes)")
    engine = _engine_settings(gpu, cpu_kv_gib is not None, max_num_seqs, max_num_batched_tokens, enforce_eager,
                              vllm_version, interconnect, _env(sets))
    targets = _target_count(gpu, gpus, instance, cpu_kv_gib)
    if targets > 1:
        raise BadInput("give one target: --gpu NAME [--gpus N], --instance TYPE or --cpu-kv-gib N")
    chosen = resolve_model(model)
    if targets == 0:
        ranked = _instance_catalog().instance_fits(
            chosen, max_model_len, fitting_only=not show_all, gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype, kv_dtype=kv_dtype, engine=engine)
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
        itype, result = _instance_catalog().instance_plan(
            chosen, instance, max_model_len, gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, dtype=dtype, kv_dtype=kv_dtype, engine=engine)
        price = itype.price
        header = (f"{chosen.key} on {itype.name} ({itype.gpus} x {itype.gpu.display_name}, {itype.vcpus} vCPU, "
                  f"{itype.memory_gib} GiB; {price.label()}{' estimate' if price.estimate else ''}, "
                  f"{price.region}, {price.date})")
    else:
        card, memory = _card(gpu or "", gpu_memory_gib)
        result = plan_gpus(chosen, card, gpus if gpus is not None else 1, max_model_len=max_model_len,
                           gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                           dtype=dtype, kv_dtype=kv_dtype, memory_bytes=memory, engine=engine)
        total = (memory or card.cuda_total_bytes) // 2**20
        header = f"{chosen.key} on {result.gpu_count} x {card.display_name} ({total:,} MiB as CUDA reports it)"
    if json_out:
        print_json({**result.to_dict(), **({"price": price.model_dump()} if price else {})})
    else:
        _print_plan(result.to_dict(), header)


plan.__signature__ = target_options.signature(plan, before="target")  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
