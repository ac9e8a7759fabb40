"""What the rest of llmnest knows about a target without loading it: its options, its placement and
state models, and the few facts the spec's rules and the messages need.

Each target package declares one `Declaration` as `DECLARATION` in its `__init__.py`, importing only
pydantic models and this module, so that the spec, the store and the CLI's flags can read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Option:
    """One option of `llmnest up` that belongs to a target (`UpRequest.options[field]` when given).

    The CLI builds a flag from it (help prefixed `[TARGET]`), the console a form field when `label` is
    set. An option counts as given when its value differs from `default`.
    """

    field: str  # the key in UpRequest.options (and the placement field it sets, when it is one)
    flag: str  # "--region"
    help: str
    kind: type = str  # str, int or bool
    default: Any = None
    negative: str | None = None  # a bool's off flag: "--private" for "--public"
    min: int | None = None
    max: int | None = None
    param: str | None = None  # the CLI function's parameter name, when it differs from `field`
    required: bool = False  # the target refuses a request without it (named in hints: `--region REGION`)
    from_stdin: bool = False  # a bool flag that makes the CLI read the value (a secret) as one line of stdin
    label: str | None = None  # the console's form label; None keeps it off the form
    placeholder: str = ""

    @property
    def param_name(self) -> str:
        return self.param or self.field


@dataclass(frozen=True)
class Declaration:
    """A target as the spec, the store, the CLI and the console see it; its verbs are the targets.base.Target
    subclass in the package's `target` module whose `declaration` this is."""

    name: str  # `--target NAME`, `spec.target`
    place: str  # for a person: "this machine", "Alibaba Cloud"
    summary: str  # `--target`'s help: "local (this machine) or aliyun (an ECS GPU instance)"
    state: type[BaseModel]  # what a deployment records beside its spec (`Deployment.target_state`)
    placement: type[BaseModel] | None = None  # `spec.placement`'s model; None: the spec has none
    options: tuple[Option, ...] = ()
    store: str | None = None  # its module that adds tables to the store (state.extend), loaded before the store opens
    gateway: bool = False  # llmnest's gateway on this machine may front its engines (`spec.gateway`)
    # it runs a gateway of its own in front of its replicas (`spec.replicas` > 1 without `spec.gateway`), each
    # replica on GPUs of its own (`spec.gpu_count` counts one replica's)
    own_gateway: bool = False
    serves_on: str | None = None  # where the engine serves, when not this machine: "an Alibaba Cloud instance"
    paid: bool = False  # creates resources that cost money: the console asks to accept the price first
    show_formats: tuple[str, ...] = ("command", "script")  # `show --as` beyond `spec`
    dry_run: str | None = None  # what `up --dry-run` prints, when it can: "template, parameters, preflight"
    dry_run_shows: tuple[str, ...] = ()  # the `show --as` formats among them, for a deployment not made yet
    restart: str | None = None  # what `restart` does there, when the general words do not say it
    down: str | None = None  # what `down` removes there, likewise
    instances: bool = False  # has an instance catalog with prices (`llmnest plan` ranks it: Target.instance_fits)
    extra: str | None = None  # the pip extra of llmnest its SDKs come with
    sdk_modules: tuple[str, ...] = ()  # prefixes of the modules that extra brings

    def option(self, field: str) -> Option | None:
        return next((o for o in self.options if o.field == field), None)
