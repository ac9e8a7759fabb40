"""Recording shims for a GPU host's tools, so the bootstrap runs for real here.

`install(bin_dir, state_dir)` writes executables into bin_dir (make it the whole PATH: it also
links the few basic tools the script uses from this machine, and nothing else, so a real
`docker` or `nvidia-smi` here never stands in for a shim): a GPU image
(`docker`, `nvidia-smi`, `nvidia-ctk`, `modelscope`) or, with `bare=True`, a plain Ubuntu image whose
`apt-get install` puts the driver, docker and toolkit shims in place. Each records its argv as one
JSON line in state_dir/calls.jsonl. `docker run` starts fake_engine.py with the engine flags of the
docker command line (and the VLLM_API_KEY the docker CLI was given); `docker inspect/logs/rm` report
on and stop that process. `python3 -m venv` makes a virtualenv whose `llmnest` is this checkout's (pip
installs nothing: `fail-pip` in state_dir makes it fail), and `systemctl restart UNIT` runs the unit file
the script wrote (its EnvironmentFile and ExecStart) as a process: the instance's gateway runs for real.
No GPU, docker, package archive or hub is touched.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path

ENGINE = Path(__file__).with_name("fake_engine.py")

DOCKER = r'''
import json, os, signal, subprocess, sys
from pathlib import Path
state = Path(os.environ["SHIM_STATE"])
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"tool": "docker", "argv": args, "key_in_env": "VLLM_API_KEY" in os.environ}) + "\n")
pidfile, logfile = state / "engine.pid", state / "engine.log"

def alive():
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"

cmd = args[0]
if cmd == "run" and "--rm" in args:  # the CUDA probe: python3 -c PROBE in the engine image
    if (state / "fail-cuda").exists():
        sys.exit("RuntimeError: CUDA error: system not yet initialized")
    print(os.environ.get("SHIM_CUDA_GPUS", os.environ.get("SHIM_GPUS", "1")))
    sys.exit(0)
if cmd == "pull" and (state / "fail-pull").exists():
    sys.exit(f"Error response from daemon: manifest for {args[-1]} not found: manifest unknown")
if cmd == "info":
    print('{"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}' if "--format" in args else "Server: shim")
elif cmd == "pull":
    print(args[-1])
elif cmd == "rm":
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except OSError:
            pass
        pidfile.unlink()
elif cmd == "run":
    image_at = args.index("--entrypoint") + 2
    engine_args = args[image_at + 1:]
    command, env = [sys.executable, ENGINE, *engine_args], dict(os.environ)
    if engine_args[0] == "-c":  # python3 -c LAUNCHER KEY_FILE MODULE ARG...: the launcher runs for real,
        # with the file the --volume maps to KEY_FILE, and the stand-in engine as MODULE
        volumes = [args[i + 1].split(":") for i, word in enumerate(args) if word == "--volume"]
        host_file = next(host for host, inner, *_ in volumes if inner == engine_args[2])
        command = [sys.executable, "-c", engine_args[1], host_file, Path(ENGINE).stem, *engine_args[4:]]
        env["PYTHONPATH"] = str(Path(ENGINE).parent)
    proc = subprocess.Popen(command, stdout=open(logfile, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    pidfile.write_text(str(proc.pid))
    print("c0ffee" * 10)
elif cmd == "inspect":
    if not pidfile.exists():
        sys.exit(1)
    if "--format" in args:
        print("true 0" if alive() else "false 0")
elif cmd == "logs":
    tail = int(args[args.index("--tail") + 1])
    print("".join(logfile.read_text().splitlines(True)[-tail:]), end="")
else:
    sys.exit(f"docker shim: unsupported command {cmd}")
'''

NVIDIA_SMI = r'''
import json, os, sys
from pathlib import Path
state = Path(os.environ["SHIM_STATE"])
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"tool": "nvidia-smi", "argv": sys.argv[1:]}) + "\n")
mig = state / "mig-mode"  # "Enabled" when the instance booted with MIG on; `-mig 0` switches it off
if "--query-gpu=driver_version" in sys.argv:
    print("570.133.20")
elif "--query-gpu=mig.mode.current" in sys.argv:
    for i in range(int(os.environ.get("SHIM_GPUS", "1"))):
        print(mig.read_text() if mig.exists() else "Disabled")
elif sys.argv[1:] == ["-mig", "0"]:
    if not (state / "mig-sticks").exists():
        mig.write_text("Disabled")
else:
    for i in range(int(os.environ.get("SHIM_GPUS", "1"))):
        print(i)
'''

MODELSCOPE = r'''
import json, os, sys
from pathlib import Path
state = Path(os.environ["SHIM_STATE"])
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"tool": "modelscope", "argv": sys.argv[1:]}) + "\n")
failures = state / "modelscope-failures"
if failures.exists() and int(failures.read_text()) > 0:
    failures.write_text(str(int(failures.read_text()) - 1))
    sys.exit("modelscope shim: connection reset (simulated)")
target = Path(sys.argv[sys.argv.index("--local_dir") + 1])
target.mkdir(parents=True, exist_ok=True)
(target / "config.json").write_text("{}")
'''


PYTHON3 = r'''
import json, os, sys
from pathlib import Path
state = Path(os.environ["SHIM_STATE"])
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"tool": "python3", "argv": args}) + "\n")
if args[:2] == ["-m", "venv"]:  # a virtualenv whose llmnest is this checkout's, run by the test's python
    bindir = Path(args[2]) / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / "python").symlink_to(sys.argv[0])
    (bindir / "llmnest").write_text(f"#!/bin/sh\nPYTHONPATH={SRC} exec {PYTHON} -m llmnest \"$@\"\n")
    (bindir / "llmnest").chmod(0o755)
elif args[:3] == ["-m", "pip", "install"] and (state / "fail-pip").exists():
    sys.exit("ERROR: No matching distribution found (simulated)")
elif args[:1] == ["-c"]:
    sys.exit(0)
'''

SYSTEMCTL = r'''
import json, os, shlex, signal, subprocess, sys
from pathlib import Path
state = Path(os.environ["SHIM_STATE"])
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"tool": "systemctl", "argv": args}) + "\n")
if (state / "fail-systemctl").exists():
    sys.exit("systemctl shim: failing as asked")
unit = args[-1] if args else ""
unit_file = Path(os.environ.get("LLMNEST_ROOT", "/")) / "etc/systemd/system" / f"{unit}.service"
pidfile = state / f"unit-{unit}.pid"

def running():
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, ValueError):
        return False

def stop():
    if running():
        os.killpg(int(pidfile.read_text()), signal.SIGTERM)

if args[:1] == ["is-active"]:  # active once `enable --now` started it, or its unit's process runs
    sys.exit(0 if (state / f"active-{unit}").exists() or running() else 3)
if args[:2] == ["enable", "--now"]:
    (state / f"active-{unit}").touch()
if args[:1] in (["restart"], ["start"], ["stop"]) and unit_file.exists():
    stop()
    if args[0] != "stop":
        lines = dict(line.split("=", 1) for line in unit_file.read_text().splitlines() if "=" in line)
        env = dict(os.environ)
        for line in Path(lines["EnvironmentFile"]).read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        proc = subprocess.Popen(shlex.split(lines["ExecStart"]), env=env, start_new_session=True,
                                stdout=open(state / f"{unit}.log", "a"), stderr=subprocess.STDOUT)
        pidfile.write_text(str(proc.pid))
'''

RECORDER = r'''
import json, os, shutil, sys
from pathlib import Path
state = Path(os.environ["SHIM_STATE"])
tool, args = Path(sys.argv[0]).name, sys.argv[1:]
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"tool": tool, "argv": args}) + "\n")
if (state / f"fail-{tool}").exists():
    sys.exit(f"{tool} shim: failing as asked")
if tool == "gpg" and "-o" in args:
    Path(args[args.index("-o") + 1]).write_bytes(sys.stdin.buffer.read())
if tool == "apt-get" and "install" in args:
    for package in args[args.index("install") + 1:]:
        provides = PACKAGES.get(package)
        if provides:
            shutil.copy(state / "packages" / provides, Path(sys.argv[0]).parent / provides)
'''
DISKS = r'''
import json, os, sys
from pathlib import Path
state = Path(os.environ["SHIM_STATE"])
tool, args = Path(sys.argv[0]).name, sys.argv[1:]
with open(state / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({"tool": tool, "argv": args}) + "\n")
disks = json.loads((state / "disks.json").read_text()) if (state / "disks.json").exists() else {}
mounted = state / "mounted"
if tool == "lsblk" and "-dnpo" in args:  # whole disks: NAME TYPE
    print("".join(f"{d} disk\n" for d in disks), end="")
elif tool == "lsblk":  # a disk and its partitions
    dev = args[-1]
    print(dev.rsplit("/", 1)[-1])
    for i in range(disks[dev]["partitions"]):
        print(f"{dev.rsplit('/', 1)[-1]}{i + 1}")
elif tool == "findmnt":
    sys.exit(0 if disks.get(args[-1], {}).get("mounted") else 1)
elif tool == "blkid":
    print(disks.get(args[-1], {}).get("fstype", ""))
elif tool == "mkfs.ext4":
    disks[args[-1]]["fstype"] = "ext4"
    (state / "disks.json").write_text(json.dumps(disks))
elif tool == "mount":
    mounted.write_text(args[-1])
elif tool == "mountpoint":
    sys.exit(0 if mounted.exists() and mounted.read_text() == args[-1] else 1)
'''
DISK_TOOLS = ("lsblk", "findmnt", "blkid", "mkfs.ext4", "mount", "mountpoint")
# What the script may use from this machine: coreutils-level tools every Ubuntu image has.
BASICS = ("bash", "cat", "chmod", "curl", "cut", "date", "dirname", "du", "grep", "gunzip", "gzip", "base64",
          "head", "hostname", "install", "mkdir", "mktemp", "rm", "sleep", "tail", "tee", "touch", "tr", "wc")
# apt package -> the GPU-image tool it installs (on a bare image)
PACKAGES = {"nvidia-utils-570-server": "nvidia-smi", "docker.io": "docker", "nvidia-container-toolkit": "nvidia-ctk"}
BARE_TOOLS = ("apt-get", "ubuntu-drivers", "modprobe", "gpg")
SRC = Path(__file__).resolve().parents[2] / "src"  # this checkout's llmnest, for the instance's virtualenv


def _write(path: Path, body: str, env: dict[str, str]) -> None:
    prelude = "".join(f"{k} = {v!r}\n" for k, v in env.items())
    path.write_text(f"#!{sys.executable}\n{prelude}{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def install(bin_dir: Path, state_dir: Path, *, bare: bool = False) -> None:
    """A GPU image's tools in bin_dir; with `bare`, only what apt would install them with."""
    gpu_tools = state_dir / "packages" if bare else bin_dir
    for folder in (bin_dir, state_dir, gpu_tools):
        folder.mkdir(parents=True, exist_ok=True)
    _write(gpu_tools / "docker", DOCKER, {"ENGINE": str(ENGINE)})
    _write(gpu_tools / "nvidia-smi", NVIDIA_SMI, {})
    _write(gpu_tools / "nvidia-ctk", RECORDER, {"PACKAGES": PACKAGES})
    _write(bin_dir / "modelscope", MODELSCOPE, {})
    _write(bin_dir / "python3", PYTHON3, {"SRC": str(SRC), "PYTHON": sys.executable})
    _write(bin_dir / "systemctl", SYSTEMCTL, {})
    for tool in DISK_TOOLS:
        _write(bin_dir / tool, DISKS, {})
    for tool in BASICS:
        found = shutil.which(tool, path="/usr/bin:/bin")
        if found is None:
            raise RuntimeError(f"the shims need {tool} on this machine")
        (bin_dir / tool).symlink_to(found)
    if bare:
        for tool in BARE_TOOLS:
            _write(bin_dir / tool, RECORDER, {"PACKAGES": PACKAGES})


def unpacked(text: str) -> str:
    """A RunCommand script with its gzipped body (if any) in plain, as bash on the instance runs it."""
    m = re.search(r"""^eval "\$\(printf '%s' '([A-Za-z0-9+/=]+)' \| base64 -d \| gunzip\)"$""", text, re.MULTILINE)
    if m is None:
        return text
    return text[: m.start()] + gzip.decompress(base64.b64decode(m.group(1))).decode() + text[m.end() + 1 :]


def calls(state_dir: Path, tool: str | None = None) -> list[dict]:
    path = state_dir / "calls.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if tool is None or r["tool"] == tool]


def stop_engine(state_dir: Path) -> None:
    """Stop the engine and every unit (the gateway) the shims started."""
    for pidfile in (state_dir / "engine.pid", *state_dir.glob("unit-*.pid")):
        if pidfile.exists():
            try:
                os.killpg(int(pidfile.read_text()), 15)
            except OSError:
                pass
