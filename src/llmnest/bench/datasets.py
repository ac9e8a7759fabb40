"""Benchmark prompts: ShareGPT, random token sequences, or a JSONL file; sampled like `vllm bench serve`.

ShareGPT: keep conversations with at least two turns, shuffle them with `random.Random(seed)` (the
same permutation vLLM's `random.seed(seed); random.shuffle(...)` gives), take turn 0 as the prompt and
the token length of turn 1 as max_tokens, and drop pairs outside vLLM's bounds. Too few prompts left
are topped up by seeded random choice, as vLLM oversamples.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import BadInput, LlmnestError

MIN_LEN = 4  # vLLM drops prompts or outputs shorter than this
MAX_PROMPT_LEN = 1024
MAX_TOTAL_LEN = 2048

SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
SHAREGPT_URL = (
    "https://www.modelscope.cn/api/v1/datasets/gliang1001/ShareGPT_V3_unfiltered_cleaned_split/repo"
    f"?Source=SDK&Revision=master&FilePath={SHAREGPT_FILE}"
)


@dataclass(frozen=True)
class Prompt:
    """One request to send: the text, its length in tokens (0 when unknown) and max_tokens."""

    text: str
    prompt_len: int
    output_len: int


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def special_ids(self) -> set[int]: ...


class HFTokenizer:
    """A model folder's tokenizer.json through the `tokenizers` library (what HF fast tokenizers wrap)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as _Tok

        self._tok = _Tok.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=True).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=False)

    @property
    def special_ids(self) -> set[int]:
        return {i for i, tok in self._tok.get_added_tokens_decoder().items() if tok.special}


def load_tokenizer(path: str | Path) -> HFTokenizer:
    """The tokenizer of a model folder (or a tokenizer.json file)."""
    p = Path(path).expanduser()
    file = p / "tokenizer.json" if p.is_dir() else p
    if not file.is_file():
        raise BadInput(f"no tokenizer.json at {p}; pass --tokenizer with a model folder that has one")
    try:
        return HFTokenizer(file)
    except Exception as exc:  # the tokenizers library raises its own Exception type
        raise BadInput(f"cannot read the tokenizer {file}: {exc}") from None


def is_valid_pair(prompt_len: int, output_len: int, *, check_output: bool = True) -> bool:
    """vLLM's ShareGPT filter."""
    if prompt_len < MIN_LEN or (check_output and output_len < MIN_LEN):
        return False
    return prompt_len <= MAX_PROMPT_LEN and prompt_len + output_len <= MAX_TOTAL_LEN


def read_sharegpt(path: Path) -> list[tuple[str, str]]:
    """(prompt, reference answer) pairs of the conversations with two turns or more, in file order."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise BadInput(f"{path} is not a ShareGPT file: expected a JSON list of conversations")
    pairs = []
    for entry in data:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if isinstance(turns, list) and len(turns) >= 2:
            first, second = turns[0], turns[1]
            if isinstance(first, dict) and isinstance(second, dict):
                pairs.append((str(first.get("value", "")), str(second.get("value", ""))))
    if not pairs:
        raise BadInput(f"{path} holds no conversation with two turns (ShareGPT format: "
                       '[{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}])')
    return pairs


def sample_sharegpt(
    pairs: list[tuple[str, str]], tokenizer: Tokenizer, n: int, seed: int, output_len: int | None = None
) -> list[Prompt]:
    """n prompts as vLLM samples them; `output_len` fixes max_tokens (and skips the short-output check)."""
    order = list(pairs)
    random.Random(seed).shuffle(order)
    picked: list[Prompt] = []
    for prompt, answer in order:
        if len(picked) >= n:
            break
        prompt_len = len(tokenizer.encode(prompt))
        out_len = output_len if output_len is not None else len(tokenizer.encode(answer))
        if is_valid_pair(prompt_len, out_len, check_output=output_len is None):
            picked.append(Prompt(prompt, prompt_len, out_len))
    if not picked:
        raise BadInput(
            f"no prompt is left after the ShareGPT filters (prompt {MIN_LEN}-{MAX_PROMPT_LEN} tokens, "
            f"output >= {MIN_LEN}, total <= {MAX_TOTAL_LEN}); use another dataset or --output-len"
        )
    return oversample(picked, n, seed)


def oversample(prompts: list[Prompt], n: int, seed: int) -> list[Prompt]:
    """Top a short list up to n by seeded random choice (vLLM's oversampling)."""
    if len(prompts) >= n:
        return prompts
    rng = random.Random(seed)
    return prompts + [rng.choice(prompts) for _ in range(n - len(prompts))]


def sample_random(
    tokenizer: Tokenizer, n: int, input_len: int, output_len: int, seed: int, range_ratio: float = 0.0
) -> list[Prompt]:
    """Synthetic prompts of input_len tokens (+-range_ratio), decoded from consecutive allowed token ids."""
    import numpy as np

    if input_len < 1 or output_len < 1:
        raise BadInput("--input-len and --output-len must be at least 1 for the random dataset")
    rng = np.random.default_rng(seed)
    lo_in, hi_in = max(1, int(input_len * (1 - range_ratio))), int(input_len * (1 + range_ratio))
    lo_out, hi_out = max(1, int(output_len * (1 - range_ratio))), int(output_len * (1 + range_ratio))
    in_lens = rng.integers(lo_in, hi_in + 1, size=n)
    out_lens = rng.integers(lo_out, hi_out + 1, size=n)
    offsets = rng.integers(0, tokenizer.vocab_size, size=n)
    special = tokenizer.special_ids
    allowed = np.array([i for i in range(tokenizer.vocab_size) if i not in special])
    prompts = []
    for i in range(n):
        ids = allowed[(offsets[i] + i + np.arange(in_lens[i])) % len(allowed)].tolist()
        text, length = _fit_length(tokenizer, ids, int(in_lens[i]), rng)
        prompts.append(Prompt(text, length, int(out_lens[i])))
    return prompts


def _fit_length(tokenizer: Tokenizer, ids: list[int], target: int, rng: Any) -> tuple[str, int]:
    """Decode ids to text whose re-encoding has `target` tokens (a few rounds of pad or trim)."""
    text = tokenizer.decode(ids)
    for _ in range(10):
        ids = tokenizer.encode(text)
        if len(ids) == target:
            break
        if len(ids) > target:
            ids = ids[:target]
        else:
            ids = ids + rng.integers(0, tokenizer.vocab_size, size=target - len(ids)).tolist()
        text = tokenizer.decode(ids)
    return text, len(tokenizer.encode(text))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL prompt file: {"prompt": "...", "output_tokens": 128 (optional)}."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}:{number} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"]:
            raise BadInput(f'{path}:{number} has no "prompt" string; each line must be {{"prompt": "..."}}')
        rows.append(row)
    if not rows:
        raise BadInput(f"{path} holds no prompt; each line must be a JSON object with a \"prompt\"")
    return rows


def sample_jsonl(
    rows: list[dict[str, Any]], n: int, seed: int, tokenizer: Tokenizer | None, output_len: int | None
) -> list[Prompt]:
    """Shuffled rows (like vLLM's custom dataset); max_tokens from --output-len, else the row's output_tokens."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    prompts = []
    for row in order[:n]:
        out = output_len if output_len is not None else row.get("output_tokens")
        if not isinstance(out, int) or out < 1:
            raise BadInput('a JSONL prompt has no "output_tokens" (a positive integer); add them or pass --output-len')
        prompts.append(Prompt(row["prompt"], len(tokenizer.encode(row["prompt"])) if tokenizer else 0, out))
    return oversample(prompts, n, seed)


def sharegpt_path(given: str | None, cache_dir: Path, say: Callable[[str], None]) -> Path:
    """The ShareGPT file: the given path, a cached copy, or a download from ModelScope (the seed's dataset)."""
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise BadInput(f"dataset file {path} does not exist")
        return path
    cached = cache_dir / SHAREGPT_FILE
    if cached.is_file():
        return cached
    say(f"downloading {SHAREGPT_FILE} from ModelScope into {cache_dir}")
    _download(SHAREGPT_URL, cached)
    return cached


def _download(url: str, target: Path) -> None:
    """Stream a file to disk with a progress bar; a partial file never takes the final name."""
    import httpx
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30) as resp:
            resp.raise_for_status()
            total = int(resp.headers.get("content-length", 0)) or None
            with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()) as bar:
                task = bar.add_task("ShareGPT", total=total)
                with partial.open("wb") as out:
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)
                        bar.advance(task, len(chunk))
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise LlmnestError(
            f"cannot download the ShareGPT dataset ({type(exc).__name__}); offline? "
            f"Fetch {SHAREGPT_FILE} elsewhere and pass --dataset-path, or use --dataset random"
        ) from None
    partial.rename(target)


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON ({exc}); expected a ShareGPT file") from None
