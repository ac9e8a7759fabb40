"""Where a catalog model's tokenizer comes from when its weights are not on this machine (a cloud
deployment being benchmarked from here). No hub is reachable from the test machine: the download
itself is replaced by a stand-in that writes what the hub would, and records what was asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmnest import sources
from llmnest.catalog import get_model
from llmnest.errors import LlmnestError

QWQ = get_model("Qwen/QwQ-32B")


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMNEST_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_weights_on_this_machine_serve_as_the_tokenizer(models: Path) -> None:
    weights = models / QWQ.modelscope_id
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    assert sources.fetch_tokenizer(QWQ, print) == weights


def test_only_the_tokenizer_files_are_downloaded_once(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def hub_stand_in(hub: str, model, target: Path, allow: list[str] | None) -> None:
        asked.append((hub, model.key, allow))
        assert (target / ".incomplete").exists()  # a download cut short is not taken as done
        (target / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(sources, "_reachable", lambda url: url == sources.HUBS["modelscope"])
    monkeypatch.setattr(sources, "_download", hub_stand_in)
    said: list[str] = []
    folder = sources.fetch_tokenizer(QWQ, said.append)
    assert folder == models / "tokenizers" / QWQ.modelscope_id and (folder / "tokenizer.json").is_file()
    assert asked == [("modelscope", "Qwen/QwQ-32B", ["tokenizer.json", "tokenizer_config.json"])]
    assert said == [f"downloading the tokenizer of Qwen/QwQ-32B from modelscope into {folder}"]
    assert sources.fetch_tokenizer(QWQ, said.append) == folder and len(asked) == 1


def test_offline_says_to_pass_a_tokenizer(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_reachable", lambda url: False)
    with pytest.raises(LlmnestError) as err:
        sources.fetch_tokenizer(QWQ, print)
    assert err.value.message == ("cannot reach ModelScope or Hugging Face to download the tokenizer of Qwen/QwQ-32B "
                                 "(offline?). Pass --tokenizer with a folder that has the model's tokenizer.json.")
