"""The planner's KV capacity against what real vLLM (CPU build) logs, for three KV space settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmnest.catalog import demo_model
from llmnest.demo import demo_weights
from llmnest.engines import render_launch
from llmnest.logs import kv_cache_tokens
from llmnest.plan import plan_for_spec
from llmnest.spec import DeploymentSpec
from tests.conftest import MODELS_CACHE, serving_on

# (VLLM_CPU_KVCACHE_SPACE GiB, --max-model-len, port): 4000 and 2500 are not multiples of the
# 128-token block, so vLLM's per-request rounding is exercised too.
SETTINGS = [(1, 4000, 18091), (2, 4096, 18092), (3, 2500, 18093)]


@pytest.fixture(scope="module")
def weights() -> Path:
    os.environ.setdefault("LLMNEST_MODELS_DIR", str(MODELS_CACHE))
    return demo_weights(demo_model(), say=lambda _msg: None)


def _logged_kv(spec: DeploymentSpec, weights: Path, log: Path, timeout: float = 420) -> int:
    """Start vLLM for `spec`, wait for its KV cache line, stop it; the tokens it logged."""
    launch = render_launch(spec, str(weights), api_key=None)
    with log.open("w") as out:
        proc = subprocess.Popen(launch.argv(sys.executable), env={**os.environ, **launch.env},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = kv_cache_tokens(log.read_text(errors="replace").splitlines())
            if found:
                return found
            if proc.poll() is not None:
                raise AssertionError(f"vLLM exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        raise AssertionError(f"no KV cache line after {timeout} s:\n{log.read_text()[-3000:]}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.e2e
@pytest.mark.parametrize(("kv_gib", "max_model_len", "port"), SETTINGS)
def test_predicted_kv_tokens_within_1_percent_of_vllm(weights, tmp_path, kv_gib, max_model_len, port):
    model = demo_model()
    spec = DeploymentSpec(
        name=f"plan-kv-{kv_gib}", model=model.key, served_model_name=model.short_name, port=port,
        device="cpu", cpu_kv_cache_gib=kv_gib, max_model_len=max_model_len, enforce_eager=True,
    )
    plan = plan_for_spec(spec, model, gpus=())
    logged = _logged_kv(spec, weights, tmp_path / "vllm.log")
    assert plan.fits
    assert abs(plan.kv_cache_tokens - logged) <= 0.01 * logged, (plan.kv_cache_tokens, logged, plan.arithmetic)
    assert not serving_on(port), "vLLM left running"
