"""The interface every place a deployment can run implements (this machine, Alibaba Cloud, Kubernetes).

A target is stateless: what a deployment is lives in the store (`state.Deployment`: the spec, a
shared status and the target's typed state). The verbs take that record and a `Context` of
callbacks; they raise LlmnestError subclasses and never print. What a target cannot do is declared
in `unsupported` with the reason, and checked by the lifecycle before any side effect, so the CLI and
the console never branch on a target's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import yaml

from .. import state
from ..spec_builder import UpRequest
from ..catalog import CatalogModel
from ..endpoints import Endpoint
from ..errors import BadInput
from ..gateway.remote_admin import GatewayChannel
from ..gateway.upstreams import Upstream
from ..plan import Plan
from ..spec import DeploymentSpec
from .declaration import Declaration

Say = Callable[[str], None]
OnPhase = Callable[[str, str], None]  # (phase, latest log line)
Confirm = Callable[[str], bool]

DEFAULT_TIMEOUT = 1800.0


class Capability(str, Enum):
    """What a command may ask of a target beyond the fixed verbs."""

    FOLLOW_LOGS = "--follow"  # keep printing the log as it grows
    FORCE_PLAN = "--force"  # start what the memory plan refuses
    DRY_RUN = "--dry-run"  # render what would be created, create nothing
    GATEWAY_LOGS = "--gateway"  # the log of the gateway in front of the deployment
    SCALE = "scale"  # change the engine replicas in place (`llmnest scale NAME N`): opt-in (Target.offers)
    DELETE_WEIGHTS = "--delete-weights"  # `down` deletes the deployment's own weights volume too: opt-in


# What a target cannot do unless it says so in `offers`, with the reason given when it does not.
OPT_IN: dict[Capability, str] = {
    Capability.SCALE: "replicas do not change in place there; where it can run several, "
                      "`llmnest redeploy {name} --set replicas=N` rolls them out",
    Capability.DELETE_WEIGHTS: "it keeps no weights of its own there (`down` removes what it created)",
}


@dataclass
class Context:
    """How a verb reports progress and asks for consent; options that only some verbs read."""

    say: Say = lambda _line: None
    on_phase: OnPhase = lambda _phase, _line: None
    confirm: Confirm = lambda _question: False
    # Where else a model that does not fit would: the lifecycle asks the other targets (Target.instance_hint)
    elsewhere: Callable[[CatalogModel, int, Any], str | None] = lambda _model, _length, _engine: None
    timeout: float = DEFAULT_TIMEOUT
    force: bool = False
    yes: bool = False
    dry_run: bool = False
    delete_weights: bool = False  # `down`: the weights volume goes too (Capability.DELETE_WEIGHTS)


@dataclass(frozen=True)
class Resolved:
    """A request turned into a spec (not recorded yet), its API key and its catalog entry."""

    spec: DeploymentSpec
    api_key: str | None
    model: CatalogModel | None
    settings: dict[str, Any] = field(default_factory=dict)  # options not in the spec (a password), for the verbs


@dataclass
class Created:
    """What `up` hands back: the stored deployment, its key, and what the target adds (region, price...)."""

    deployment: state.Deployment
    api_key: str | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


class Target(ABC):
    """One place deployments run. Subclasses fill the verbs; the lifecycle checks capabilities first."""

    declaration: ClassVar[Declaration]  # its package's DECLARATION: name, place, options, placement, state
    unsupported: ClassVar[dict[Capability, str]] = {}
    offers: ClassVar[frozenset[Capability]] = frozenset()  # the OPT_IN capabilities it has

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def place(self) -> str:
        """For a person: "this machine", "Alibaba Cloud"."""
        return self.declaration.place

    @property
    def show_formats(self) -> tuple[str, ...]:
        """`show --as` beyond `spec`."""
        return self.declaration.show_formats

    def refusal(self, capability: Capability, name: str = "NAME") -> str | None:
        """Why this target cannot do `capability` (for deployment `name`), or None when it can."""
        reason = self.unsupported.get(capability)
        if reason is None and capability in OPT_IN and capability not in self.offers:
            reason = OPT_IN[capability]
        return reason.format(name=name) if reason else None

    @abstractmethod
    def resolve(self, req: UpRequest) -> Resolved:
        """Validate and fill in a request: no side effect, no network."""

    def check(self, resolved: Resolved, ctx: Context) -> None:
        """The refusals `create` makes before any side effect (a taken name or port, an engine missing, a
        model too big unless ctx.force), made without creating anything; by default none."""

    def plan(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        """What a person sees before deploying (the console's Plan). `kind` says how to show it: "memory" (a
        memory plan on a host: `plan`), "instances" (the instance types that fit with their price, and the
        dry-run: `instances`, `preflight`, `template`, `parameters`, `bootstrap`), "table" (`title`, `columns`,
        `rows` of strings, `checks` [{check, ok: True/False/None, detail}], `notes` lines; other keys are for
        `--json`), or by default "spec" (`yaml`). `llmnest plan MODEL --target NAME` prints it by its kind."""
        return {"kind": "spec", "spec": resolved.spec.name,
                "yaml": yaml.safe_dump(resolved.spec.model_dump(mode="json"), sort_keys=False)}

    @abstractmethod
    def render(self, resolved: Resolved, ctx: Context) -> dict[str, Any]:
        """What `up --dry-run` shows: the artefacts the target would apply and its checks."""

    def dry_run_text(self, result: dict[str, Any]) -> str:
        """What `render` returned, for a person (`up --dry-run` without --json); by default as YAML."""
        return yaml.safe_dump(result, sort_keys=False).rstrip()

    @abstractmethod
    def create(self, resolved: Resolved, ctx: Context) -> Created:
        """Check, record, create, and wait until the model answers; undo what the target's rules say on failure."""

    def short_where(self, dep: state.Deployment) -> str:
        """One word for the `ls` column: the target's name, unless it has a finer one."""
        return self.name

    @abstractmethod
    def where(self, dep: state.Deployment) -> str:
        """Where it runs, for a person: 'process on this machine', '1 x ecs.gn7i-4x.8xlarge, cn-hangzhou/...'."""

    @abstractmethod
    def status(self, dep: state.Deployment) -> dict[str, Any]:
        """The live view: what the target reports now, beyond the stored record (may also update it)."""

    @abstractmethod
    def endpoints(self, dep: state.Deployment, api_key: str | None) -> list[Endpoint]:
        """The URLs a client uses, the one reachable from here first."""

    def upstreams(self, dep: state.Deployment) -> list[Upstream]:
        """Where a gateway on this machine reaches the deployment's engines that are up, with the key they
        take. By default its first endpoint with the deployment's key (an engine elsewhere)."""
        if dep.status not in state.ACTIVE:
            return []
        key = state.api_key(dep.name)
        eps = self.endpoints(dep, key)
        return [Upstream(dep.spec.served_model_name, dep.name, eps[0].base_url.rstrip("/"), key)] if eps else []

    @abstractmethod
    def logs(self, dep: state.Deployment, tail: int, follow: bool, replica: int = 0) -> Iterator[str]:
        """An engine replica's last `tail` log lines (then new ones, with follow)."""

    def gateway_logs(self, dep: state.Deployment, tail: int, follow: bool) -> Iterator[str]:
        """The same for the gateway in front of the deployment."""
        raise AssertionError("the lifecycle checks Capability.GATEWAY_LOGS first")

    @abstractmethod
    def show(self, dep: state.Deployment, fmt: str) -> str:
        """`show --as FMT` beyond the spec: `command` and `script` everywhere, others per target."""

    @abstractmethod
    def restart(self, dep: state.Deployment, ctx: Context) -> None:
        """The same spec again, waiting until it answers."""

    @abstractmethod
    def redeploy(self, dep: state.Deployment, new: DeploymentSpec, ctx: Context) -> str | None:
        """Replace the engine with `new` (validated by the caller), waiting until it answers; returns one line
        saying how it was replaced, where the target has a choice."""

    def scale(self, dep: state.Deployment, replicas: int, ctx: Context) -> str:
        """Change the engine replicas in place, waiting for them; one line saying what changed. For a target
        that offers Capability.SCALE."""
        raise AssertionError("the lifecycle checks Capability.SCALE first")

    @abstractmethod
    def down(self, dep: state.Deployment, ctx: Context) -> str:
        """Remove what the deployment created and forget it (its weights too with ctx.delete_weights, for a
        target that offers Capability.DELETE_WEIGHTS); returns one line saying what went."""

    def quick_status(self, dep: state.Deployment) -> dict[str, Any]:
        """What `status` adds that is known without a network call (for `ls`); by default nothing."""
        return {}

    def gateway_channel(self, dep: state.Deployment) -> GatewayChannel | None:
        """How to run `llmnest` next to the deployment's gateway when that is not this machine's (the target's
        own authenticated channel, never a new open port); None: its gateway is this machine's."""
        return None

    def log_file(self, dep: state.Deployment) -> str | None:
        """A log path on this machine a person can open, when there is one."""
        return None

    def price_per_hour(self, dep: state.Deployment) -> float | None:
        """What the deployment costs an hour, when the target knows (bench's cost per 1M tokens)."""
        return None

    def kv_cache(self, dep: state.Deployment) -> tuple[int | None, int | None]:
        """KV cache tokens planned and logged by the engine, when the target records them (`status`)."""
        return None, None

    def key_name(self, dep: state.Deployment, api_key: str | None) -> str | None:
        """What a gateway in front calls the key `up` printed (`default`), when one does."""
        return None

    def gateways(self) -> list[dict[str, Any]]:
        """The gateways this target runs on this machine (`llmnest gateway ls`): port, base_url, status,
        restarts, deployments, log."""
        return []

    def instance_fits(self, model: CatalogModel, max_model_len: int | None = None, *, fitting_only: bool = True,
                      **settings: Any) -> list[Any]:
        """`llmnest plan MODEL`: this target's instance types each with the plan of `model` on it (`.instance`
        with name, gpu, gpus, vcpus, memory_gib, price; `.plan`; `.to_dict()`), cheapest first, only those that
        fit unless `fitting_only` is False. `settings` are plan_gpus's. For a declaration with `instances`."""
        return []

    def instance_plan(self, model: CatalogModel, instance_type: str, max_model_len: int | None = None,
                      **settings: Any) -> tuple[Any, Plan]:
        """`llmnest plan MODEL --instance TYPE`: the instance type and the plan of `model` on it."""
        raise BadInput(f"--target {self.name} has no instance types")

    def instance_hint(self, model: CatalogModel, max_model_len: int, engine: Any) -> str | None:
        """For a plan that does not fit elsewhere: one line naming what of this target would fit `model` at
        `max_model_len` with `engine` (planner EngineSettings), as `up` flags; None when nothing would."""
        return None
