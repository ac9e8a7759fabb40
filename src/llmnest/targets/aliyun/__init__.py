"""Alibaba Cloud: one ROS stack per deployment (network, GPU instances, bootstrap, wait condition).

Pure renderers (sizing, template, bootstrap, validate) are separate from the SDK edge (client) and
the orchestration (preflight, service); `target` gives them the lifecycle's verbs.
"""
