"""Dataset sampling and filters (vLLM's ShareGPT rules), seeded and reproducible; bad files are one clear error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmnest.bench import datasets
from llmnest.bench.datasets import is_valid_pair
from llmnest.errors import BadInput

DATA = Path(__file__).resolve().parent.parent / "data"
TINY = DATA / "sharegpt_tiny.json"


class WordTokenizer:
    """A whitespace tokenizer: token counts are easy to reason about in tests."""

    vocab_size = 1000
    special_ids: set[int] = set()

    def encode(self, text: str) -> list[int]:
        return [hash(w) % self.vocab_size for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids)


def write_sharegpt(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text(json.dumps([{"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
                                for q, a in pairs]))
    return path


def test_vllm_bounds() -> None:
    assert is_valid_pair(4, 4)
    assert not is_valid_pair(3, 100)  # prompt too short
    assert not is_valid_pair(100, 3)  # output too short
    assert is_valid_pair(100, 3, check_output=False)  # a fixed --output-len skips that check
    assert is_valid_pair(1024, 1024)
    assert not is_valid_pair(1025, 10)  # prompt > 1024
    assert not is_valid_pair(1000, 1049)  # total > 2048


def test_reading_keeps_only_two_turn_conversations() -> None:
    pairs = datasets.read_sharegpt(TINY)
    assert len(pairs) == 30  # the file also holds a one-turn entry and one without conversations
    assert pairs[0][0].startswith("What is the capital of France")


def test_sampling_shuffles_like_vllm_and_filters() -> None:
    """Same permutation as vLLM's random.seed(seed); random.shuffle(data); short prompts are dropped."""
    pairs = datasets.read_sharegpt(TINY)
    tok = WordTokenizer()
    got = datasets.sample_sharegpt(pairs, tok, 10, seed=5)
    expected_order = list(pairs)
    random.seed(5)
    random.shuffle(expected_order)
    kept = [(q, a) for q, a in expected_order if is_valid_pair(len(q.split()), len(a.split()))][:10]
    assert [p.text for p in got] == [q for q, _ in kept]
    assert [p.output_len for p in got] == [len(a.split()) for _, a in kept]
    assert all(p.prompt_len >= 4 for p in got)
    assert "Hi" not in [p.text for p in datasets.sample_sharegpt(pairs, tok, 30, seed=5)]


def test_sampling_is_reproducible_and_depends_on_the_seed() -> None:
    pairs = datasets.read_sharegpt(TINY)
    tok = WordTokenizer()
    assert datasets.sample_sharegpt(pairs, tok, 8, 1) == datasets.sample_sharegpt(pairs, tok, 8, 1)
    assert datasets.sample_sharegpt(pairs, tok, 8, 1) != datasets.sample_sharegpt(pairs, tok, 8, 2)


def test_fixed_output_len_sets_max_tokens() -> None:
    got = datasets.sample_sharegpt(datasets.read_sharegpt(TINY), WordTokenizer(), 5, 0, output_len=16)
    assert {p.output_len for p in got} == {16}


def test_too_few_prompts_are_oversampled_from_the_kept_ones() -> None:
    pairs = datasets.read_sharegpt(TINY)
    got = datasets.sample_sharegpt(pairs, WordTokenizer(), 100, 0)
    assert len(got) == 100
    distinct = set(got)
    assert len(distinct) < 30 and all(p in distinct for p in got[len(distinct):])


def test_no_prompt_left_after_filters_is_bad_input(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "short.json", [("hi", "hello there my friend"), ("yo", "a b c d e")])
    with pytest.raises(BadInput, match="no prompt is left"):
        datasets.sample_sharegpt(datasets.read_sharegpt(path), WordTokenizer(), 5, 0)


@pytest.mark.parametrize("content, message", [
    ("", "not valid JSON"),
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "expected a JSON list"),
    ("[]", "no conversation with two turns"),
    ('[{"conversations": [{"value": "only one"}]}]', "no conversation with two turns"),
])
def test_malformed_or_empty_sharegpt_is_bad_input(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BadInput, match=message):
        datasets.read_sharegpt(path)


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "one two three", "output_tokens": 7}\n\n{"prompt": "four five", "output_tokens": 9}\n')
    rows = datasets.read_jsonl(path)
    got = datasets.sample_jsonl(rows, 2, 0, WordTokenizer(), None)
    assert sorted((p.text, p.prompt_len, p.output_len) for p in got) == [("four five", 2, 9), ("one two three", 3, 7)]
    assert {p.output_len for p in datasets.sample_jsonl(rows, 2, 0, None, 4)} == {4}
    assert datasets.sample_jsonl(rows, 2, 0, None, 4)[0].prompt_len == 0  # unknown without a tokenizer


@pytest.mark.parametrize("content, message", [
    ("", "holds no prompt"),
    ("not json\n", "not valid JSON"),
    ('{"text": "x"}\n', 'no "prompt"'),
])
def test_bad_jsonl_is_bad_input(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(BadInput, match=message):
        datasets.read_jsonl(path)


def test_jsonl_without_output_tokens_needs_output_len(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="output_tokens"):
        datasets.sample_jsonl([{"prompt": "a b c d"}], 1, 0, None, None)


def test_random_range_ratio_spreads_lengths() -> None:
    prompts = datasets.sample_random(WordTokenizer(), 200, input_len=50, output_len=40, seed=0, range_ratio=0.5)
    outs = [p.output_len for p in prompts]
    assert min(outs) >= 20 and max(outs) <= 60 and len(set(outs)) > 10


def test_missing_tokenizer_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no tokenizer.json"):
        datasets.load_tokenizer(tmp_path)


def test_given_dataset_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        datasets.sharegpt_path(str(tmp_path / "nope.json"), tmp_path, print)
    assert datasets.sharegpt_path(str(TINY), tmp_path, print) == TINY
