"""`llmnest bench`: a serving load test with the metric definitions of `vllm bench serve`.

As a library: `bench.run(BenchRequest(...), progress)` (session.py). Inside:
prompt_sources (dataset registry) -> datasets (prompts) -> schedule (send times) -> sender / workers
(requests on their schedule) -> request (one streamed call) -> runner (stages) -> metrics (pure
arithmetic) -> report / charts / compare (output).
"""

from .runner import Progress, StageResult
from .session import BenchRequest, BenchRun, run

__all__ = ["BenchRequest", "BenchRun", "Progress", "StageResult", "run"]
