"""The cluster's news that decides whether a GPU deployment comes up, as one line each. Pure.

Users' top complaints are silent stalls: a pod Pending because no node has a free GPU, a volume that
does not mount, a model OOM-killed or killed by a probe while it loads. These read the Event and Pod
objects (as dicts) and say what happened and what to do.
"""

from __future__ import annotations

import re

GPU_SHORT = re.compile(r"Insufficient nvidia\.com/gpu")


def event_line(event: dict) -> str | None:
    """One line for an Event that matters during `up`, or None for routine ones."""
    reason = event.get("reason", "")
    obj = event.get("involvedObject", {})
    what = f"{obj.get('kind', 'object').lower()} {obj.get('name', '?')}"
    message = " ".join(str(event.get("message", "")).split())
    if reason == "FailedScheduling" and GPU_SHORT.search(message):
        return (f"{what} waits: no node has enough free nvidia.com/gpu ({message}); free GPUs, add a node to "
                "the GPU pool or lower --replicas")
    if reason == "FailedScheduling":
        return f"{what} cannot be scheduled: {message}"
    if reason in {"FailedMount", "FailedAttachVolume"}:
        return f"{what} cannot mount its volume: {message}"
    if reason == "Unhealthy":
        return f"{what} probe failed: {message}"
    if reason == "BackOff" and "restarting failed container" in message.lower():
        return f"{what} keeps crashing: {message}; see `llmnest logs`"
    if reason in {"Failed", "ErrImagePull", "ImagePullBackOff"}:
        return f"{what}: {message}"
    return None


def pod_lines(pod: dict) -> list[str]:
    """What a pod's status says went wrong: OOMKilled containers, image pull failures."""
    name = pod.get("metadata", {}).get("name", "?")
    out = []
    for status in pod.get("status", {}).get("containerStatuses", []) or []:
        last = (status.get("lastState") or {}).get("terminated") or {}
        if last.get("reason") == "OOMKilled":
            out.append(f"pod {name}: container {status['name']} was OOMKilled (restarts {status.get('restartCount', 0)});"
                       " give it more memory or lower max_model_len")
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in {"ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff"}:
            out.append(f"pod {name}: {waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
    return out
