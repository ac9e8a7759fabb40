"""Where a run's prompts come from: the dataset registry (`sharegpt`, `random`, `jsonl`).

Each dataset names what it needs (a tokenizer, a file) and loads `total` prompts with a seed; the
benchmark's callers (CLI, console) only pass the dataset's name and options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from . import datasets
from .datasets import Prompt, Tokenizer


@dataclass(frozen=True)
class PromptQuery:
    """What a dataset is asked for."""

    path: str | None
    tokenizer: Tokenizer | None
    total: int
    seed: int
    input_len: int | None
    output_len: int | None
    cache_dir: Path
    say: Callable[[str], None]


def _sharegpt(q: PromptQuery) -> list[Prompt]:
    if q.tokenizer is None:
        raise BadInput("--dataset sharegpt needs a tokenizer to count tokens: pass --tokenizer MODEL_DIR")
    file = datasets.sharegpt_path(q.path, q.cache_dir, q.say)
    return datasets.sample_sharegpt(datasets.read_sharegpt(file), q.tokenizer, q.total, q.seed, q.output_len)


def _random(q: PromptQuery) -> list[Prompt]:
    if q.path:
        raise BadInput("--dataset random makes its own prompts; drop --dataset-path")
    if q.tokenizer is None:
        raise BadInput("--dataset random needs a tokenizer: pass --tokenizer MODEL_DIR (a folder with tokenizer.json)")
    return datasets.sample_random(q.tokenizer, q.total, q.input_len or 1024, q.output_len or 128, q.seed)


def _jsonl(q: PromptQuery) -> list[Prompt]:
    if not q.path:
        raise BadInput("--dataset jsonl needs --dataset-path FILE.jsonl")
    file = Path(q.path).expanduser()
    if not file.is_file():
        raise BadInput(f"dataset file {file} does not exist")
    return datasets.sample_jsonl(datasets.read_jsonl(file), q.total, q.seed, q.tokenizer, q.output_len)


DATASETS: dict[str, Callable[[PromptQuery], list[Prompt]]] = {"sharegpt": _sharegpt, "random": _random, "jsonl": _jsonl}


def check_dataset(name: str) -> None:
    if name not in DATASETS:
        raise BadInput(f"--dataset must be {', '.join(DATASETS)} (got {name})")


def load_prompts(name: str, query: PromptQuery) -> list[Prompt]:
    """`query.total` prompts of the named dataset, sampled with `query.seed`."""
    check_dataset(name)
    return DATASETS[name](query)
