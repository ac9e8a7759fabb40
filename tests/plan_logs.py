"""Replays a published vLLM startup log (tests/data/vllm_gpu_logs*.yaml) through the planner.

`python -m tests.plan_logs` prints the predicted-vs-logged tables; `python -m tests.plan_logs --write` puts them
into docs/plan.md between its `<!-- plan_logs: NAME -->` and `<!-- /plan_logs -->` lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import json
import sys
import tempfile

import yaml

from llmnest.catalog import DTYPE_BYTES, CatalogModel, get_model
from llmnest.errors import BadInput
from llmnest.plan import gpu_model, plan_gpus, resolve_model
from llmnest.plan.hardware import GpuModel
from llmnest.plan.memory import EngineSettings, capture_sizes, cuda_graph_bytes
from llmnest.plan.vllm_rules import TERMS

DATA = Path(__file__).resolve().parent / "data"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "plan.md"
CALIBRATION = DATA / "vllm_gpu_logs.yaml"
HELD_OUT = DATA / "vllm_gpu_logs_heldout.yaml"
VALIDATION = DATA / "vllm_gpu_logs_validation.yaml"
GRAPHS = DATA / "vllm_gpu_logs_graphs.yaml"
GIB = 1024**3


def load(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())


def _model(entry: str | dict[str, Any]) -> CatalogModel:
    if isinstance(entry, str):
        return get_model(entry)
    context = entry["context_length"]
    return CatalogModel(display_name=entry["key"], hf_id=entry["key"], modelscope_id=entry["key"],
                        max_model_len=context, **entry)


def _gpu(case: dict[str, Any]) -> tuple[GpuModel, int | None]:
    """The catalog card (its CUDA total is what is tested), or a stand-in with the logged total.

    `nvlink`, when a case states it, is the link the log shows (e.g. "custom allreduce is disabled because your
    platform lacks GPU P2P capability", or a group that spans nodes): it overrides the catalog card's.
    """
    if case["catalog_gpu"]:
        card = gpu_model(case["catalog_gpu"])
        return (card.model_copy(update={"nvlink": case["nvlink"]}) if "nvlink" in case else card), None
    mib = round(case["cuda_total_gib"] * 1024)
    card = GpuModel(key=case["gpu"], display_name=case["gpu"], memory_gb=max(1, mib // 1024), memory_mib=mib,
                    cuda_total_mib=mib, cuda_total_measured=True, cuda_total_source="the log",
                    compute_capability=8.0, nvlink=case.get("nvlink", False))
    return card, mib * 2**20


def _env(case: dict[str, Any]) -> dict[str, str]:
    """The engine environment: the case's own `env`, and the sampler the log shows (`flashinfer_sampler`: the
    log says "Using FlashInfer for top-p & top-k sampling", or V0 / "FlashInfer is not available")."""
    shown = case.get("flashinfer_sampler")
    sampler = {} if shown is None else {"VLLM_USE_FLASHINFER_SAMPLER": "1" if shown else "0"}
    return {**sampler, **case.get("env", {})}


def _link(case: dict[str, Any]) -> str | None:
    """The interconnect the log shows ('nvlink: true/false'), else None: the planner's own choice."""
    if "nvlink" not in case:
        return None
    return "nvlink" if case["nvlink"] else "pcie"


@dataclass(frozen=True)
class Replay:
    case_id: str
    predicted_gib: float
    logged_gib: float
    predicted_tokens: int
    logged_tokens: int | None

    @property
    def error_pct(self) -> float:
        return 100 * (self.predicted_gib - self.logged_gib) / self.logged_gib


def replay(case: dict[str, Any]) -> Replay:
    """The KV cache per GPU the planner predicts for the case's settings, against the logged one."""
    card, memory = _gpu(case)
    tp = case["tensor_parallel_size"]
    kv_dtype = None if case["kv_cache_dtype"] == "auto" else case["kv_cache_dtype"]
    plan = plan_gpus(
        _model(case["model"]), card, tp, max_model_len=case["max_model_len"],
        gpu_memory_utilization=case["gpu_memory_utilization"], tensor_parallel_size=tp, dtype=case["dtype"],
        kv_dtype=kv_dtype, memory_bytes=memory,
        engine=EngineSettings(max_num_batched_tokens=case["max_num_batched_tokens"],
                              max_num_seqs=case["max_num_seqs"], enforce_eager=case["enforce_eager"],
                              vllm_version=case["vllm"], env=_env(case), interconnect=_link(case),
                              flashinfer_installed=case.get("flashinfer_installed")),
    )
    logged = case["logged"]
    return Replay(case["id"], plan.kv_cache_bytes / GIB, logged["kv_cache_gib"], plan.kv_cache_tokens,
                  logged.get("kv_cache_tokens"))


@dataclass(frozen=True)
class GraphReplay:
    case_id: str
    predicted_gib: float
    logged_gib: float
    piecewise: int
    full: int


def graph_replay(case: dict[str, Any]) -> GraphReplay:
    """The planner's CUDA graph term for the case's model and settings, against vLLM's logged estimate (0.18 and
    0.19 compute it only with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1, which the replay sets)."""
    model = _model(case["model"])
    settings = EngineSettings(vllm_version=case["vllm"], env={"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "1"})
    rules = settings.rules(model, case["dtype"])
    seqs, tokens = case["max_num_seqs"], case["max_num_batched_tokens"]
    sizes = capture_sizes(seqs, tokens)
    act_bytes = max(DTYPE_BYTES[case["dtype"]], 2)
    predicted = cuda_graph_bytes(model, act_bytes, rules, "", tokens, seqs, case["tensor_parallel_size"])
    return GraphReplay(case["id"], predicted / GIB, case["logged_graph_gib"], len(sizes),
                       sum(1 for n in sizes if n <= seqs))


def graph_table(path: Path = GRAPHS) -> str:
    rows = ["| log | vLLM | model | TP | graphs (piecewise + FULL) | planned GiB | vLLM's estimate (gpt-oss: captured) GiB "
            "| seen |",
            "|---|---|---|---|---|---|---|---|"]
    for case in load(path):
        r = graph_replay(case)
        rows.append(f"| {case['id']} | {case['vllm']} | {case['model']['key']} | {case['tensor_parallel_size']} | "
                    f"{r.piecewise} + {r.full} | {r.predicted_gib:.2f} | {r.logged_gib:.2f} | {case['seen']} |")
    return "\n".join(rows)


def modelled(path: Path) -> list[dict[str, Any]]:
    """The cases of `path` the planner answers with a number (not the ones it must refuse)."""
    return [case for case in load(path) if "refused" not in case]


def refused(path: Path) -> list[dict[str, Any]]:
    return [case for case in load(path) if "refused" in case]


def refusal(case: dict[str, Any]) -> str:
    """The one line `llmnest plan` refuses the case with: its model folder's (its config.json, no weights), or, for a
    case without a `config`, the plan's for its settings (a version whose profile of the model is not modelled);
    empty when it does not refuse."""
    if "config" not in case:
        try:
            replay(case)
        except BadInput as exc:
            return str(exc)
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / case["id"]
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(case["config"]))
        try:
            resolve_model(str(folder))
        except BadInput as exc:
            return str(exc)
    return ""


def refusal_table(path: Path, header: bool = True) -> str:
    rows = ["| log | vLLM | logged KV GiB | the planner's answer |", "|---|---|---|---|"] if header else [""]
    for case in refused(path):
        rows.append(f"| {case['id']} | {case['vllm']} | {case['logged']['kv_cache_gib']:.2f} | {refusal(case)} |")
    return "\n".join(rows)


def terms_table() -> str:
    """The terms vLLM subtracts, per version range, and where each was read (llmnest.plan.vllm_rules.TERMS)."""
    rows = ["| term | vLLM | rule | read in |", "|---|---|---|---|"]
    rows += [f"| {t.term} | {t.versions} | {t.rule} | {t.source} |" for t in TERMS]
    return "\n".join(rows)


def table(path: Path) -> str:
    seen = path == VALIDATION
    header = "| log | vLLM | GPU | TP | util | predicted KV GiB | logged KV GiB | error | predicted tokens | logged tokens |"
    rows = [header + (" seen |" if seen else ""),
            "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if seen else "")]
    for case in modelled(path):
        r = replay(case)
        gpu = case["catalog_gpu"] or f"{case['cuda_total_gib']} GiB card"
        tokens = f"{r.logged_tokens:,}" if r.logged_tokens else "-"
        rows.append(f"| {case['id']} | {case['vllm']} | {gpu} | {case['tensor_parallel_size']} | "
                    f"{case['gpu_memory_utilization']:g} | {r.predicted_gib:.2f} | {r.logged_gib:.2f} | "
                    f"{r.error_pct:+.1f}% | {r.predicted_tokens:,} | {tokens} |"
                    + (f" {case['seen']} |" if seen else ""))
    return "\n".join(rows)


def write_docs(doc: Path = DOCS) -> None:
    """Replace each generated table in `doc` with a fresh one."""
    lines, out, skipping = doc.read_text().splitlines(), [], False
    for line in lines:
        if line.startswith("<!-- plan_logs: "):
            name = line.removeprefix("<!-- plan_logs: ").removesuffix(" -->")
            tables = {"calibration": lambda: table(CALIBRATION), "held out": lambda: table(HELD_OUT),
                      "validation": lambda: table(VALIDATION),
                      "refused": lambda: refusal_table(VALIDATION) + refusal_table(CALIBRATION, header=False),
                      "terms": terms_table, "graphs": graph_table}
            out += [line, tables[name]()]
            skipping = True
        elif line == "<!-- /plan_logs -->":
            skipping = False
        if not skipping:
            out.append(line)
    doc.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_docs()
    else:
        for name, path in (("calibration", CALIBRATION), ("held out", HELD_OUT), ("validation", VALIDATION)):
            print(f"{name}:\n{table(path)}\n")
        print(f"refused:\n{refusal_table(VALIDATION)}{refusal_table(CALIBRATION, header=False)}\n")
        print(f"CUDA graph estimate:\n{graph_table()}")
