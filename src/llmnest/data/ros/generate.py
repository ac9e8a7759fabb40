"""Regenerate resource_types.json from the ROS CDK's generated constructs (a maintainer's tool).

Source: the `ros-cdk-ecs` and `ros-cdk-ros` packages on PyPI (Alibaba Cloud's ROS CDK, Apache-2.0).
Each wheel carries the npm package of the constructs as `_jsii/<name>@<version>.jsii.tgz`; its
`lib/<service>.generated.js` holds, per resource type, the function that renders the ROS property
names (`'InstanceType': ros.stringToRosTemplate(properties.instanceType)`) and the validator with
the published constraints (required, allowed values, ranges, lengths, patterns). This script reads
those two functions (and the nested-property ones) for the resource types llmnest uses and writes
their definitions as JSON. Only facts are extracted; no CDK code is copied.

    pip download --no-deps ros-cdk-ecs==1.15.0 ros-cdk-ros==1.15.0 -d /tmp/roscdk
    python src/llmnest/data/ros/generate.py /tmp/roscdk/*.whl
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path

WANTED = {
    "ALIYUN::ECS::VPC",
    "ALIYUN::ECS::VSwitch",
    "ALIYUN::ECS::SecurityGroup",
    "ALIYUN::ECS::InstanceGroup",
    "ALIYUN::ECS::RunCommand",
    "ALIYUN::ROS::WaitCondition",
    "ALIYUN::ROS::WaitConditionHandle",
}
# ALIYUN::RandomString is a ROS built-in the CDK does not model: written down from the ROS resource
# reference (help.aliyun.com, "ALIYUN::RandomString"), limited to what llmnest uses.
_CLASSES = ["lettersdigits", "letters", "lowercase", "uppercase", "digits", "hexdigits", "octdigits"]
HAND_WRITTEN = {
    "ALIYUN::RandomString": {
        "source": "ROS resource reference: ALIYUN::RandomString (hand-written)",
        "properties": {
            "Length": {"type": "number", "range": [1.0, 512.0]},
            "Sequence": {"type": "string", "allowed_values": _CLASSES},
            "CharacterClasses": {"type": "list", "items": {"type": "struct", "properties": {
                "Class": {"type": "string", "required": True, "allowed_values": _CLASSES},
                "Min": {"type": "number", "range": [1.0, None]},
            }}},
        },
        "attributes": ["Value"],
    },
}
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


def main(wheels: list[str]) -> None:
    types: dict = {}
    sources = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            tgz_name = next(n for n in zf.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(zf.read(tgz_name))) as tf:
                for member in tf.getmembers():
                    if member.name.endswith(".generated.js"):
                        types.update(extract(tf.extractfile(member).read().decode()))
        sources.append(Path(wheel).name)
    missing = WANTED - set(types)
    if missing:
        raise SystemExit(f"not found in the given wheels: {sorted(missing)}")
    types.update(HAND_WRITTEN)
    out = Path(__file__).with_name("resource_types.json")
    doc = {"source": {"pypi_wheels": sorted(sources), "files": "lib/*.generated.js in each wheel's .jsii.tgz"}, "types": types}
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(types)} resource types to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
