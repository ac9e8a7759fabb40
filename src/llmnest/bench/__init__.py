"""`llmnest bench`: a serving load test with the metric definitions of `vllm bench serve`.

datasets (prompts) -> schedule (send times) -> request (one streamed call) -> runner (stages)
-> metrics (pure arithmetic) -> report / charts / compare (output).
"""
