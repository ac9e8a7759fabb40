"""Kubernetes (ACK first): the placement, pure manifest renderers and a thin client over lightkube.

Not registered as a target yet: the verbs arrive once targets declare options and state their new way.
"""
