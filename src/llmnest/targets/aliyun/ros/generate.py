"""Regenerate resource_types.json from what Alibaba Cloud publishes (a maintainer's tool).

Sources, each entry of the output naming its own:
- the `@alicloud/ros-cdk-ecs` and `@alicloud/ros-cdk-ros` npm packages (Alibaba Cloud's ROS CDK,
  Apache-2.0): `package/lib/<service>.generated.js` holds, per resource type, the function that renders
  the ROS property names (`'InstanceType': ros.stringToRosTemplate(properties.instanceType)`) and the
  validator with the published constraints (required, allowed values, ranges, lengths, patterns);
  the class's `getAtt('...')` calls name its attributes.
- for a type the CDK lacks (ALIYUN::RandomString), Alibaba's published templates (the
  aliyun/ros-templates repository): the property names, nested keys and values they write, and
  the attributes they read (`Fn::GetAtt [R, attr]`, `${R.attr}`).
Only facts are extracted; no CDK or template code is copied.

    cd /tmp && npm pack @alicloud/ros-cdk-ecs@1.11.0 @alicloud/ros-cdk-ros@1.11.0
    git clone https://github.com/aliyun/ros-templates /tmp/ros-templates   # note the commit
    python src/llmnest/targets/aliyun/ros/generate.py /tmp/alicloud-ros-cdk-*.tgz --templates /tmp/ros-templates
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import yaml

WANTED = {
    "ALIYUN::ECS::VPC",
    "ALIYUN::ECS::VSwitch",
    "ALIYUN::ECS::SecurityGroup",
    "ALIYUN::ECS::InstanceGroup",
    "ALIYUN::ECS::RunCommand",
    "ALIYUN::ROS::WaitCondition",
    "ALIYUN::ROS::WaitConditionHandle",
}
FROM_TEMPLATES = {"ALIYUN::RandomString"}  # not in the CDK: learnt from published templates
CONVERTERS = {
    "ros.stringToRosTemplate": "string",
    "ros.numberToRosTemplate": "number",
    "ros.booleanToRosTemplate": "boolean",
    "ros.objectToRosTemplate": "any",
}
ENTRY = re.compile(r"^\s*'(\w+)': (.+)\(properties\.(\w+)\),$", re.MULTILINE)


def _function(js: str, name: str) -> str:
    start = js.index(f"function {name}(")
    return js[start : js.index("\n}\n", start)]


def _type_of(expr: str, js: str, cls: str) -> dict:
    if expr in CONVERTERS:
        return {"type": CONVERTERS[expr]}
    if m := re.fullmatch(r"ros\.listMapper\((.+)\)", expr):
        return {"type": "list", "items": _type_of(m.group(1), js, cls)}
    if m := re.fullmatch(r"ros\.hashMapper\((.+)\)", expr):
        return {"type": "map", "values": _type_of(m.group(1), js, cls)}
    if m := re.fullmatch(r"ros" + cls[3:] + r"(\w+)PropertyToRosTemplate", expr):
        return {"type": "struct", "properties": _properties(js, cls, expr, f"{cls}_{m.group(1)}PropertyValidator")}
    raise ValueError(f"unknown converter {expr!r} in {cls}")


def _constraints(validator: str, camel: str) -> dict:
    out: dict = {}
    q = re.escape(camel)
    if re.search(rf"propertyValidator\('{q}', ros\.requiredValidator\)", validator):
        out["required"] = True
    if m := re.search(rf"propertyValidator\('{q}', ros\.validateAllowedValues\)\(\{{\s*data: [^,]+,\s*allowedValues: (\[.*?\]),", validator, re.DOTALL):
        out["allowed_values"] = json.loads(m.group(1))
    for kind in ("Range", "Length"):
        pat = rf"propertyValidator\('{q}', ros\.validate{kind}\)\(\{{\s*data: [^\n]+\n\s*min: (\S+),\s*max: (\S+),"
        if m := re.search(pat, validator):
            low, high = (None if v == "undefined" else float(v) for v in m.groups())
            out[kind.lower()] = [low, high]
    if m := re.search(rf"propertyValidator\('{q}', ros\.validateAllowedPattern\)\(\{{\s*data: [^\n]+\n\s*reg: /(.*)/\n", validator):
        out["pattern"] = m.group(1)
    return out


def _properties(js: str, cls: str, renderer: str, validator_name: str) -> dict:
    body = _function(js, renderer)
    validator = _function(js, validator_name)
    props = {}
    for key, expr, camel in ENTRY.findall(body):
        props[key] = {**_type_of(expr, js, cls), **_constraints(validator, camel)}
    return props


def extract(js: str) -> dict:
    types = {}
    for cls, type_name in re.findall(r'^(Ros\w+)\.ROS_RESOURCE_TYPE_NAME = "([^"]+)";', js, re.MULTILINE):
        if type_name not in WANTED:
            continue
        renderer = cls[0].lower() + cls[1:] + "PropsToRosTemplate"
        start = js.index(f"class {cls} extends")
        klass = js[start : js.index(f"exports.{cls} = {cls};", start)]
        types[type_name] = {
            "properties": _properties(js, cls, renderer, f"{cls}PropsValidator"),
            "attributes": sorted(set(re.findall(r"this\.attr\w+ = this\.getAtt\('(\w+)'\)", klass))),
        }
    return types


def _kind(values: list[Any]) -> dict[str, Any]:
    """A definition covering every value a template wrote for one property."""
    if all(isinstance(v, bool) for v in values):
        return {"type": "boolean"}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return {"type": "number"}
    if all(isinstance(v, str) for v in values):
        return {"type": "string", "allowed_values": sorted(set(values))}
    if all(isinstance(v, list) for v in values):
        items = [i for v in values for i in v]
        return {"type": "list", "items": _kind(items)}
    if all(isinstance(v, dict) for v in values):
        keys = sorted({k for v in values for k in v})
        return {"type": "struct", "properties": {k: _kind([v[k] for v in values if k in v]) for k in keys}}
    return {"type": "any"}


def _yaml(path: Path) -> Any:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)  # short-form functions: not needed here
    try:
        return yaml.load(path.read_text(errors="replace"), Loader=Loader)
    except yaml.YAMLError:
        return None


def from_templates(root: Path, wanted: set[str]) -> dict[str, Any]:
    """Definitions of `wanted` types from every published template under `root` that uses them."""
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown commit"
    found: dict[str, dict[str, Any]] = {t: {"props": {}, "attrs": set(), "files": set()} for t in wanted}
    for path in sorted(root.rglob("*.y*ml")):
        doc = _yaml(path)
        resources = doc.get("Resources") if isinstance(doc, dict) else None
        if not isinstance(resources, dict):
            continue
        text = json.dumps(doc, default=str)
        for name, res in resources.items():
            kind = res.get("Type") if isinstance(res, dict) else None
            if kind not in wanted:
                continue
            entry = found[kind]
            entry["files"].add(str(path.relative_to(root)))
            for key, value in (res.get("Properties") or {}).items():
                entry["props"].setdefault(key, []).append(value)
            q = re.escape(name)
            entry["attrs"] |= set(re.findall(rf'"Fn::GetAtt": \["{q}", "(\w+)"\]', text))
            entry["attrs"] |= set(re.findall(rf"\$\{{{q}\.(\w+)\}}", text))
    out = {}
    for kind, entry in found.items():
        if not entry["files"]:
            raise SystemExit(f"no published template under {root} uses {kind}")
        out[kind] = {
            "source": f"aliyun/ros-templates@{commit}: " + ", ".join(sorted(entry["files"])),
            "properties": {k: _kind(v) for k, v in sorted(entry["props"].items())},
            "attributes": sorted(entry["attrs"]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", type=Path, help="npm package tarballs (npm pack)")
    parser.add_argument("--templates", type=Path, required=True, help="a checkout of aliyun/ros-templates")
    args = parser.parse_args()
    types: dict = {}
    for package in args.packages:
        with tarfile.open(package) as tf:
            meta = json.load(tf.extractfile("package/package.json"))
            for member in tf.getmembers():
                if member.name.endswith(".generated.js"):
                    source = f"npm {meta['name']}@{meta['version']} {member.name}"
                    for kind, definition in extract(tf.extractfile(member).read().decode()).items():
                        types[kind] = {"source": source, **definition}
    missing = WANTED - set(types)
    if missing:
        raise SystemExit(f"not found in the given packages: {sorted(missing)}")
    types.update(from_templates(args.templates, FROM_TEMPLATES))
    out = Path(__file__).with_name("resource_types.json")
    out.write_text(json.dumps({"types": types}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(types)} resource types to {out}")


if __name__ == "__main__":
    main()
