"""Check a ROS template against the published resource-type definitions. Pure.

The definitions (ros/resource_types.json) are extracted from what Alibaba Cloud publishes: the
`@alicloud/ros-cdk-*` npm packages, and for a type they lack, Alibaba's published templates; each
type names its source (see ros/generate.py). A property or attribute no source names is a
problem. Each check returns a list of problems, empty when the template is sound.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

PSEUDO_PARAMETERS = {
    "ALIYUN::NoValue", "ALIYUN::Region", "ALIYUN::StackId", "ALIYUN::StackName", "ALIYUN::AccountId",
    "ALIYUN::TenantId",
}
PARAMETER_TYPES = {"String", "Number", "CommaDelimitedList", "Json", "Boolean"}
PARAMETER_KEYS = {
    "Type", "Default", "AllowedValues", "AllowedPattern", "MinLength", "MaxLength", "MinValue", "MaxValue",
    "NoEcho", "Description", "ConstraintDescription", "Label", "AssociationProperty", "AssociationPropertyMetadata",
}
SECTIONS = {"ROSTemplateFormatVersion", "Description", "Parameters", "Conditions", "Mappings", "Resources",
            "Outputs", "Metadata"}
SECRET_WORDS = re.compile(r"password|apikey|secret|token", re.IGNORECASE)


@cache
def definitions() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("ros/resource_types.json").read_text()
    return json.loads(text)["types"]


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)).startswith(("Ref", "Fn::"))


def _walk(value: Any):
    """Every dict inside `value` (depth first)."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def check_references(template: dict[str, Any]) -> list[str]:
    """Every Ref, Fn::GetAtt, condition and DependsOn names something that exists."""
    problems = [f"unknown section {s}" for s in template if s not in SECTIONS]
    params = set(template.get("Parameters", {}))
    res = template.get("Resources", {})
    conds = set(template.get("Conditions", {}))
    defs = definitions()
    for node in _walk({k: v for k, v in template.items() if k != "Parameters"}):
        if "Ref" in node and len(node) == 1:
            name = node["Ref"]
            if name not in params and name not in res and name not in PSEUDO_PARAMETERS:
                problems.append(f"Ref {name!r} names no parameter, resource or pseudo parameter")
        if "Fn::GetAtt" in node:
            target, attr = node["Fn::GetAtt"]
            if target not in res:
                problems.append(f"Fn::GetAtt names unknown resource {target!r}")
            elif attr not in defs.get(res[target]["Type"], {}).get("attributes", []):
                problems.append(f"{res[target]['Type']} has no attribute {attr!r} (Fn::GetAtt {target})")
        if "Fn::If" in node and node["Fn::If"][0] not in conds:
            problems.append(f"Fn::If names unknown condition {node['Fn::If'][0]!r}")
    for name, r in res.items():
        for dep in r.get("DependsOn", []):
            if dep not in res:
                problems.append(f"{name} depends on unknown resource {dep!r}")
        if "Condition" in r and r["Condition"] not in conds:
            problems.append(f"{name} names unknown condition {r['Condition']!r}")
    for name, out in template.get("Outputs", {}).items():
        if "Condition" in out and out["Condition"] not in conds:
            problems.append(f"output {name} names unknown condition {out['Condition']!r}")
    return problems


def _check_value(where: str, value: Any, spec: dict[str, Any], template: dict[str, Any]) -> list[str]:
    if _is_intrinsic(value):
        return _check_reference_value(where, value, spec, template)
    kind = spec["type"]
    problems: list[str] = []
    type_ok = {
        "string": isinstance(value, str),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "list": isinstance(value, list),
        "map": isinstance(value, dict),
        "struct": isinstance(value, dict),
        "any": True,
    }[kind]
    if not type_ok:
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    if "allowed_values" in spec and value not in spec["allowed_values"]:
        problems.append(f"{where}: {value!r} is not one of {spec['allowed_values']}")
    if "range" in spec:
        low, high = spec["range"]
        if (low is not None and value < low) or (high is not None and value > high):
            problems.append(f"{where}: {value} is outside [{low}, {high}]")
    if "length" in spec:
        low, high = spec["length"]
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            problems.append(f"{where}: length {len(value)} is outside [{low}, {high}]")
    if "pattern" in spec and not re.search(spec["pattern"], value):
        problems.append(f"{where}: {value!r} does not match {spec['pattern']}")
    if kind == "list":
        for i, item in enumerate(value):
            problems += _check_value(f"{where}[{i}]", item, spec["items"], template)
    elif kind == "map":
        for k, item in value.items():
            problems += _check_value(f"{where}.{k}", item, spec["values"], template)
    elif kind == "struct":
        problems += _check_properties(where, value, spec["properties"], template)
    return problems


def _check_reference_value(where: str, value: dict[str, Any], spec: dict[str, Any], template: dict) -> list[str]:
    """A Ref to a parameter: its type must suit the property and its choices must be allowed."""
    name = value.get("Ref")
    param = template.get("Parameters", {}).get(name) if isinstance(name, str) else None
    if param is None:
        return []
    wanted = {"string": "String", "number": "Number", "boolean": "Boolean", "list": "CommaDelimitedList"}
    problems = []
    if spec["type"] in wanted and param["Type"] != wanted[spec["type"]]:
        problems.append(f"{where}: parameter {name} is {param['Type']}, the property takes {spec['type']}")
    choices = param.get("AllowedValues", [param["Default"]] if "Default" in param else [])
    for choice in choices:
        if "allowed_values" in spec and choice not in spec["allowed_values"]:
            problems.append(f"{where}: parameter {name} may be {choice!r}, not one of {spec['allowed_values']}")
    return problems


def _check_properties(where: str, props: dict[str, Any], spec: dict[str, Any], template: dict) -> list[str]:
    problems = [f"{where}: unknown property {k!r}" for k in props if k not in spec]
    problems += [f"{where}: missing required property {k!r}" for k, s in spec.items()
                 if s.get("required") and k not in props]
    for key, value in props.items():
        if key in spec:
            problems += _check_value(f"{where}.{key}", value, spec[key], template)
    return problems


def check_properties(template: dict[str, Any]) -> list[str]:
    """Every resource's type is defined and its properties match the definition."""
    defs = definitions()
    problems: list[str] = []
    for name, res in template.get("Resources", {}).items():
        kind = res.get("Type")
        if kind not in defs:
            problems.append(f"{name}: resource type {kind!r} has no published definition here")
            continue
        problems += _check_properties(name, res.get("Properties", {}), defs[kind]["properties"], template)
    return problems


def _parameter_problems(name: str, p: dict[str, Any], value: Any) -> list[str]:
    problems = []
    if p["Type"] == "Number":
        try:
            number = float(value)
        except (TypeError, ValueError):
            return [f"parameter {name}: {value!r} is not a number"]
        if "MinValue" in p and number < p["MinValue"]:
            problems.append(f"parameter {name}: {value} is below {p['MinValue']}")
        if "MaxValue" in p and number > p["MaxValue"]:
            problems.append(f"parameter {name}: {value} is above {p['MaxValue']}")
    elif p["Type"] == "String":
        if not isinstance(value, str):
            return [f"parameter {name}: {value!r} is not a string"]
        if "AllowedPattern" in p and not re.fullmatch(p["AllowedPattern"], value):
            problems.append(f"parameter {name}: value does not match {p['AllowedPattern']}")
        if "MinLength" in p and len(value) < p["MinLength"]:
            problems.append(f"parameter {name}: shorter than {p['MinLength']}")
        if "MaxLength" in p and len(value) > p["MaxLength"]:
            problems.append(f"parameter {name}: longer than {p['MaxLength']}")
    if "AllowedValues" in p and value not in p["AllowedValues"] and str(value) not in map(str, p["AllowedValues"]):
        problems.append(f"parameter {name}: {value!r} is not one of {p['AllowedValues']}")
    return problems


def check_parameters(template: dict[str, Any], values: dict[str, Any] | None = None) -> list[str]:
    """Parameter declarations are well-formed, defaults satisfy their own constraints, and `values`
    (what CreateStack will send) name known parameters, fill every parameter without a default,
    and satisfy the constraints."""
    params = template.get("Parameters", {})
    values = values or {}
    problems = [f"unknown parameter {k!r}" for k in values if k not in params]
    for name, p in params.items():
        problems += [f"parameter {name}: unknown key {k!r}" for k in p if k not in PARAMETER_KEYS]
        if p.get("Type") not in PARAMETER_TYPES:
            problems.append(f"parameter {name}: unknown type {p.get('Type')!r}")
            continue
        if "Default" in p:
            problems += _parameter_problems(name, p, p["Default"])
        if name in values:
            problems += _parameter_problems(name, p, values[name])
        elif "Default" not in p:
            problems.append(f"parameter {name} has no default and no value")
    return problems


def _mentions_secret(value: Any, secret_params: set[str], secret_resources: set[str]) -> bool:
    for node in _walk(value):
        if node.get("Ref") in secret_params:
            return True
        if "Fn::GetAtt" in node and node["Fn::GetAtt"][0] in secret_resources:
            return True
    return False


def check_secrets(template: dict[str, Any]) -> list[str]:
    """Secret-looking parameters are NoEcho, and every output that carries a secret is NoEcho."""
    params = template.get("Parameters", {})
    problems = [f"parameter {n} looks secret but is not NoEcho" for n, p in params.items()
                if SECRET_WORDS.search(n) and not p.get("NoEcho")]
    secret_params = {n for n, p in params.items() if p.get("NoEcho")}
    generated = {n for n, r in template.get("Resources", {}).items() if r.get("Type") == "ALIYUN::RandomString"}
    for name, out in template.get("Outputs", {}).items():
        if _mentions_secret(out.get("Value"), secret_params, generated) and not out.get("NoEcho"):
            problems.append(f"output {name} carries a secret but is not NoEcho")
    return problems


def check_template(template: dict[str, Any], values: dict[str, Any] | None = None) -> list[str]:
    return (check_references(template) + check_properties(template) + check_parameters(template, values)
            + check_secrets(template))
