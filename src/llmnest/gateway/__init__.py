"""The gateway: one OpenAI-compatible endpoint in front of engine replicas, with keys, usage, limits, metrics.

It knows engines only as `Upstream`s (model, replica id, base URL, internal key) from a provider, so
the engines may run as local processes, containers or on other machines.
"""
