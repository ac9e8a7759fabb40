"""Kubernetes (ACK first): the target (target.py), its placement, options and state, pure manifest
renderers, the cluster preflight and a thin client over lightkube."""
