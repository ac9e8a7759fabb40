"""Checks before anything is created: the template, credentials, stock in the zone, the price.

`run` records each check; with `strict` (a real deploy) the first failing check raises its error,
otherwise (a dry run) the rest still runs and cloud checks after a failure say they were skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import LlmnestError
from ...spec import DeploymentSpec
from .client import Cloud, credential_source
from .template import secret_parameters
from .validate import check_template

LARGE_REGIONS = ("cn-beijing", "cn-shanghai", "cn-hangzhou")
VALIDATE_CHECKS = ("ros-validate", "ros-preview")
CLOUD_CHECKS = ("credentials", "stock", "price")


@dataclass
class Preflight:
    checks: list[dict[str, Any]] = field(default_factory=list)
    zone: str | None = None
    cloud: Cloud | None = None
    price: dict[str, Any] | None = None

    def add(self, check: str, ok: bool | None, detail: str) -> None:
        self.checks.append({"check": check, "ok": ok, "detail": detail})


def price_summary(resources: dict[str, Any]) -> dict[str, Any]:
    """GetTemplateEstimateCost's per-resource orders as lines and a total per price unit."""
    lines, totals, original = [], {}, {}
    currency = "CNY"
    for name, item in sorted(resources.items()):
        result = item.get("Result", {})
        order, supplement = result.get("Order", {}), result.get("OrderSupplement", {})
        unit = supplement.get("PriceUnit", "/Hour")
        currency = order.get("Currency", currency)
        amount = float(order.get("TradeAmount", 0))
        totals[unit] = totals.get(unit, 0.0) + amount
        original[unit] = original.get(unit, 0.0) + float(order.get("OriginalAmount", amount))
        lines.append({"resource": name, "type": item.get("Type", ""), "quantity": supplement.get("Quantity", 1),
                      "amount": amount, "unit": unit, "currency": currency})
    return {"lines": lines, "totals": totals, "original": original, "currency": currency}


def price_preview(spec: DeploymentSpec, price: dict[str, Any]) -> list[str]:
    """The price block shown before confirming, like the console's preview."""
    place = spec.placement
    assert place is not None
    out = [f"Price preview (ROS GetTemplateEstimateCost, {place.region}):"]
    for line in price["lines"]:
        what = f"{line['quantity']} x {place.instance_type}" if line["type"] == "ALIYUN::ECS::InstanceGroup" else ""
        out.append(f"  {line['resource']:<10} {line['type']:<28} {what:<28} "
                   f"{line['amount']:,.2f} {line['currency']}{line['unit']}")
    if place.bandwidth_mbps:
        out.append(f"  public traffic: billed by use (pay by traffic, up to {place.bandwidth_mbps} Mbps out)")
    for unit, total in price["totals"].items():
        discount = price["original"][unit] - total
        out.append(f"  total: {total:,.2f} {price['currency']}{unit} (list {price['original'][unit]:,.2f}, "
                   f"discount {discount:,.2f})")
    return out


def _zone(spec: DeploymentSpec, zones: dict[str, str]) -> str:
    place = spec.placement
    assert place is not None
    stocked = [z for z, status in zones.items() if status == "Available"]
    others = ", ".join(r for r in LARGE_REGIONS if r != place.region)
    if place.zone:
        if zones.get(place.zone) == "Available":
            return place.zone
        where = f"try --zone {' or '.join(stocked)}" if stocked else f"try --region {others}"
        raise LlmnestError(f"{place.instance_type} is not available in zone {place.zone} "
                           f"({zones.get(place.zone, 'not offered')}); {where}")
    if not stocked:
        raise LlmnestError(f"{place.instance_type} has no stock in any zone of {place.region}; "
                           f"try --region {others}, or another --instance-type")
    return stocked[0]


def run(spec: DeploymentSpec, template: dict[str, Any], values: dict[str, Any], *, strict: bool) -> Preflight:
    """`spec` must be resolved; `values` are the stack parameters without ZoneId (chosen here)."""
    place = spec.placement
    assert place is not None
    pre = Preflight()
    pre.add("plan", True, f"{place.nodes} x {place.instance_type}: {spec.gpu_count} GPU(s), tensor parallel "
                          f"{spec.tensor_parallel_size}, pipeline parallel {spec.pipeline_parallel_size}")
    problems = check_template(template, {"ZoneId": place.zone or "zone", **values})
    if problems:
        raise LlmnestError(f"the generated template is invalid (a bug): {problems[0]}")
    pre.add("template", True, "references, properties and parameters check out")

    def failed(check: str, exc: LlmnestError) -> None:
        if strict:
            raise exc
        pre.add(check, False, exc.message)
        for later in CLOUD_CHECKS[CLOUD_CHECKS.index(check) + 1 :]:
            pre.add(later, None, f"skipped: {check} failed")

    try:
        pre.add("credentials", True, f"found ({credential_source()})")
    except LlmnestError as exc:
        failed("credentials", exc)
        return pre
    pre.cloud = Cloud(place.region)
    charge = "PrePaid" if place.pay == "prepaid" else "PostPaid"
    try:
        zones = pre.cloud.available_zones(place.instance_type or "", charge)
        pre.zone = _zone(spec, zones)
        pre.add("stock", True, f"{place.instance_type} available in {pre.zone}")
    except LlmnestError as exc:
        failed("stock", exc)
        return pre
    try:
        public = {k: v for k, v in values.items() if k not in secret_parameters(template)}
        pre.price = price_summary(pre.cloud.estimate_cost(template, {"ZoneId": pre.zone, **public}))
        totals = ", ".join(f"{t:,.2f} {pre.price['currency']}{u}" for u, t in pre.price["totals"].items())
        pre.add("price", True, totals or "no priced resources")
    except LlmnestError as exc:
        failed("price", exc)
    return pre


def validate_in_cloud(spec: DeploymentSpec, template: dict[str, Any], parameters: dict[str, Any]) -> list[dict]:
    """ROS's own verdict, creating nothing (`up --dry-run --validate`): ValidateTemplate on the
    template, then PreviewStack with `parameters` (ZoneId included). Needs credentials. Each check
    as `run` records them; after a failure the rest says it was skipped."""
    place = spec.placement
    assert place is not None
    checks = Preflight()

    def failed(check: str, detail: str) -> list[dict]:
        checks.add(check, False, detail)
        for later in VALIDATE_CHECKS[VALIDATE_CHECKS.index(check) + 1 :]:
            checks.add(later, None, f"skipped: {check} failed")
        return checks.checks

    try:
        credential_source()
        cloud = Cloud(place.region)
        summary = cloud.validate_template(template)
    except LlmnestError as exc:
        return failed("ros-validate", exc.message)
    checks.add("ros-validate", True, f"ROS ValidateTemplate accepts the template ({len(summary.get('Resources') or [])} "
                                     f"resources, {len(summary.get('Parameters') or [])} parameters)")
    if not parameters.get("ZoneId"):
        checks.add("ros-preview", None, "skipped: no zone (give --zone, or let the stock check pick one)")
        return checks.checks
    try:
        planned = cloud.preview_stack(f"llmnest-{spec.name}", template, parameters, 60)
    except LlmnestError as exc:
        return failed("ros-preview", exc.message)
    kinds = sorted({r.get("ResourceType", "?") for r in planned})
    checks.add("ros-preview", True, f"ROS PreviewStack plans {len(planned)} resources ({', '.join(kinds)})")
    return checks.checks
