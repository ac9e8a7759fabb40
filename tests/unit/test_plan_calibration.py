"""The GPU planner against what real vLLM servers logged (tests/data/vllm_gpu_logs*.yaml).

The calibration logs fitted the overhead constants; the held-out logs did not, and carry the bar: the
predicted KV cache within 3% of the logged one, and never more than 1% over (an over-prediction says
"fits" where vLLM refuses at launch).
"""

from __future__ import annotations

import pytest

from llmnest.plan import confidence

from tests.plan_logs import (
    CALIBRATION, DOCS, HELD_OUT, VALIDATION, load, modelled, refusal, refusal_table, refused, replay, table, terms_table,
)

CALIBRATION_CASES = modelled(CALIBRATION)
HELD_OUT_CASES = load(HELD_OUT)
VALIDATION_CASES = modelled(VALIDATION)
REFUSED_CASES = refused(VALIDATION) + refused(CALIBRATION)


def _ids(cases):
    return [c["id"] for c in cases]


@pytest.mark.parametrize("case", HELD_OUT_CASES, ids=_ids(HELD_OUT_CASES))
def test_held_out_logs_meet_the_bar(case):
    result = replay(case)
    assert result.error_pct <= 1.0, f"over-predicts {case['id']} by {result.error_pct:+.1f}%"
    if result.logged_tokens:  # the capacity vLLM logs, in tokens, holds the same bar
        assert result.predicted_tokens <= 1.01 * result.logged_tokens
    assert result.error_pct >= -3.0, (case["id"], result.error_pct)


@pytest.mark.parametrize("case", VALIDATION_CASES, ids=_ids(VALIDATION_CASES))
def test_logs_read_after_a_model_change_meet_the_bar(case):
    """The validation set: logs first read after a version of the model was committed ("round 1": the first
    version-aware model; "after": the model rewritten from vLLM's sdists; "round 3": read after 11be688 and replayed
    before the round-3 change, which touches none of their terms; "round 4": read after 3eef27d, the last change, and
    replayed once with nothing changed after), all held to the bar. A log a change was found with (`seen: before`) is
    never among them."""
    assert case["seen"] in ("round 1", "after", "round 3", "round 4")
    result = replay(case)
    assert result.error_pct <= 1.0, (case["id"], result.error_pct)
    if result.logged_tokens:
        assert result.predicted_tokens <= 1.01 * result.logged_tokens, case["id"]
    assert result.error_pct >= -3.0, (case["id"], result.error_pct)


def test_the_held_out_bar_holds_on_every_log_read_after_the_last_change():
    """Issue 20's bar on the held-out set as a whole: every case within 3%, none over-predicted by more than 1%."""
    fresh = [c for c in VALIDATION_CASES if c["seen"] != "before"] + HELD_OUT_CASES
    errors = {c["id"]: replay(c).error_pct for c in fresh}
    assert all(-3.0 <= e <= 1.0 for e in errors.values()), errors
    assert not any(c["seen"] == "before" for c in VALIDATION_CASES)


@pytest.mark.parametrize("case", REFUSED_CASES, ids=_ids(REFUSED_CASES))
def test_logs_of_what_is_not_modelled_are_refused_with_the_reason(case):
    line = refusal(case)
    assert case["refused"] in line and "not modelled" in line, line


@pytest.mark.parametrize("case", CALIBRATION_CASES, ids=_ids(CALIBRATION_CASES))
def test_calibration_logs_are_never_over_predicted(case):
    """The fitted logs hold the 1% over bar; small KV caches on PCIe or old V0 runs miss low by up to 6.5%."""
    result = replay(case)
    assert -7.0 <= result.error_pct <= 1.0, (case["id"], result.error_pct)


def test_the_stated_confidence_is_what_the_logs_show():
    errors = [replay(c).error_pct for c in HELD_OUT_CASES]
    assert (round(min(errors), 1), round(max(errors), 1)) == confidence.HELD_OUT_ERROR
    fresh = [replay(c).error_pct for c in VALIDATION_CASES]
    assert (round(min(fresh), 1), round(max(fresh), 1)) == confidence.VALIDATION_ERROR
    misses = [abs(r.predicted_gib - r.logged_gib) for r in map(replay, CALIBRATION_CASES + HELD_OUT_CASES)]
    assert max(misses) <= confidence.OVERHEAD_SPREAD / 2**30


def test_the_sets_are_disjoint_and_every_case_is_sourced():
    ids = [_ids(load(CALIBRATION)), _ids(HELD_OUT_CASES), _ids(load(VALIDATION))]
    assert sum(map(len, ids)) == len(set().union(*ids))
    for case in CALIBRATION_CASES + HELD_OUT_CASES + VALIDATION_CASES:
        assert case["source"] and case["lines"] and case["stated"] and case["vllm"]
        assert "kv_cache_gib" in case["logged"]
    assert all(case["informs"] for case in CALIBRATION_CASES)
    assert not any(case["informs"] for case in HELD_OUT_CASES)
    gpus = {c["catalog_gpu"] for c in HELD_OUT_CASES}
    assert {"A100-40G", "A100-80G"} <= gpus and {1, 2} <= {c["tensor_parallel_size"] for c in HELD_OUT_CASES}


def test_the_catalog_total_matters():
    """Taking the A100 40 GB at its nominal 40 GiB would over-predict the held-out log: the bar would catch it."""
    case = next(c for c in HELD_OUT_CASES if c["catalog_gpu"] == "A100-40G")
    nominal = {**case, "catalog_gpu": None, "cuda_total_gib": 40.0, "nvlink": case.get("nvlink", True)}
    assert replay(nominal).predicted_gib > replay(case).predicted_gib + 0.3


def test_the_docs_show_the_tables_the_fixtures_give():
    """docs/plan.md's predicted-vs-logged tables are generated (python -m tests.plan_logs --write), not typed."""
    doc = DOCS.read_text()
    assert table(CALIBRATION) in doc and table(HELD_OUT) in doc and table(VALIDATION) in doc
    assert refusal_table(VALIDATION) in doc and terms_table() in doc
