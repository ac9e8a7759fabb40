"""Where llmnest keeps its state: $LLMNEST_HOME, default ~/.llmnest."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BadInput


def home() -> Path:
    """$LLMNEST_HOME (default ~/.llmnest), created on first use; a path that is not a folder is bad input."""
    path = Path(os.environ.get("LLMNEST_HOME") or Path.home() / ".llmnest").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (FileExistsError, NotADirectoryError):
        raise BadInput(f"LLMNEST_HOME={path} is not a folder; point it at a folder (it is created if missing)") from None
    except PermissionError:
        raise BadInput(f"cannot create LLMNEST_HOME={path} (permission denied); point it at a folder you own") from None
    return path


def deployment_dir(name: str) -> Path:
    path = home() / "deployments" / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def log_path(name: str, replica: int = 0) -> Path:
    """An engine replica's log (stdout and stderr, appended across restarts)."""
    return deployment_dir(name) / ("engine.log" if replica == 0 else f"engine-{replica}.log")


def supervisor_log_path(name: str, replica: int = 0) -> Path:
    """What a replica's supervisor itself printed (its crashes, not the engine's)."""
    return deployment_dir(name) / ("supervisor.log" if replica == 0 else f"supervisor-{replica}.log")


def gateway_default_key_path() -> Path:
    """The secret of the gateway's `default` key, which `up` prints behind the gateway (mode 0600)."""
    return home() / "gateway" / "default_key"


def gateway_log_path(port: int) -> Path:
    """The log of the gateway that `up` runs on `port`."""
    path = home() / "gateway"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path / f"{port}.log"


def models_dir() -> Path:
    """Downloaded and converted weights: $LLMNEST_MODELS_DIR, default $LLMNEST_HOME/models."""
    override = os.environ.get("LLMNEST_MODELS_DIR")
    path = Path(override).expanduser() if override else home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_secret(path: Path, value: str) -> None:
    """Write a secret file readable by its owner only, atomically."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    os.replace(tmp, path)
