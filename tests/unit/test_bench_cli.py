"""Bad input through the real CLI: one clear line on stderr, a non-zero exit, no traceback.
(Errors that need a live server, like a wrong key or an unknown model, are in tests/e2e.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port

TINY = Path(__file__).resolve().parent.parent / "data" / "sharegpt_tiny.json"


def one_error_line(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("•")]
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert text in lines[0], lines[0]


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "Say hello to the benchmark."}\n')
    return path


def base(url: str, *extra: str) -> list[str]:
    return ["bench", "--base-url", url, "--num-prompts", "2", *extra]


@pytest.mark.parametrize("qps", ["0", "-3", "fast"])
def test_qps_must_be_positive(cli, dead_url: str, jsonl: Path, qps: str) -> None:
    done = cli(*base(dead_url, "--dataset", "jsonl", "--dataset-path", str(jsonl), "--output-len", "4", "--qps", qps))
    one_error_line(done, 2, "QPS")


def test_unreachable_url(cli, dead_url: str, jsonl: Path) -> None:
    done = cli(*base(dead_url, "--dataset", "jsonl", "--dataset-path", str(jsonl), "--output-len", "4", "--qps", "1"))
    one_error_line(done, 1, f"cannot reach {dead_url}")


@pytest.mark.parametrize("content, text", [
    ("", "is not valid JSON"),
    ("[1, 2", "is not valid JSON"),
    ("[]", "no conversation with two turns"),
    (json.dumps([{"conversations": [{"value": "hi"}, {"value": "hello"}]}]), "no prompt is left after the ShareGPT filters"),
])
def test_bad_sharegpt_file(cli, dead_url: str, tmp_path: Path, content: str, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    tok = tmp_path / "tok"
    tok.mkdir()
    _write_word_tokenizer(tok / "tokenizer.json")
    done = cli(*base(dead_url, "--dataset-path", str(path), "--tokenizer", str(tok), "--qps", "1"))
    one_error_line(done, 2, text)


def test_empty_jsonl(cli, dead_url: str, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    one_error_line(cli(*base(dead_url, "--dataset", "jsonl", "--dataset-path", str(path), "--output-len", "4")), 2,
                   "holds no prompt")


def test_missing_dataset_file(cli, dead_url: str, tmp_path: Path) -> None:
    done = cli(*base(dead_url, "--dataset", "jsonl", "--dataset-path", str(tmp_path / "nope.jsonl")))
    one_error_line(done, 2, "does not exist")


def test_sharegpt_needs_a_tokenizer_with_a_plain_url(cli, dead_url: str) -> None:
    one_error_line(cli(*base(dead_url, "--dataset-path", str(TINY))), 2, "needs a tokenizer")


def test_name_and_url_together(cli, dead_url: str) -> None:
    one_error_line(cli("bench", "demo", "--base-url", dead_url), 2, "not both")


def test_no_deployment(cli) -> None:
    one_error_line(cli("bench", "--num-prompts", "1"), 4, "no deployments")


@pytest.mark.parametrize("flag, value, text", [
    ("--goodput", "ttft", "--goodput"),
    ("--endpoint", "embeddings", "--endpoint"),
    ("--dataset", "sonnet", "--dataset"),
    ("--burstiness", "0", "--burstiness"),
    ("--timeout", "0", "--timeout"),
    ("--duration", "0", "--duration"),
])
def test_bad_flag_values(cli, dead_url: str, flag: str, value: str, text: str) -> None:
    one_error_line(cli("bench", "--base-url", dead_url, flag, value), 2, text)


def test_compare_needs_run_directories(cli, tmp_path: Path) -> None:
    one_error_line(cli("bench", "compare", str(tmp_path)), 2, "not a bench run directory")


def test_help_lists_the_interface(cli) -> None:
    done = cli("bench", "run", "--help")
    assert done.returncode == 0
    for flag in ("--base-url", "--api-key", "--qps", "--duration", "--num-prompts", "--burstiness",
                 "--max-concurrency", "--ignore-eos", "--warmup", "--seed", "--timeout", "--goodput",
                 "--price-per-hour", "--tokenizer", "--out", "--json", "--endpoint", "--dataset-path"):
        assert flag in done.stdout


def _write_word_tokenizer(path: Path) -> None:
    """A minimal real tokenizer.json (word-level), so these tests need no model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hi": 1, "hello": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
