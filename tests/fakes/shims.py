"""Recording shims for a GPU host's tools, so the bootstrap runs for real here.

`install(bin_dir, state_dir)` writes executables into bin_dir (put it first on PATH): a GPU image
(`docker`, `nvidia-smi`, `nvidia-ctk`, `modelscope`) or, with `bare=True`, a plain Ubuntu image whose
`apt-get install` puts the driver, docker and toolkit shims in place. Each records its argv as one
JSON line in state_dir/calls.jsonl. `docker run` starts fake_engine.py with the engine flags of the
docker command line (and the VLLM_API_KEY the docker CLI was given); `docker inspect/logs/rm` report
on and stop that process. No GPU, docker, package archive or hub is touched.
"""

from __future__ import annotations

import json
import os
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
    proc = subprocess.Popen([sys.executable, ENGINE, *engine_args], stdout=open(logfile, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
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
# apt package -> the GPU-image tool it installs (on a bare image)
PACKAGES = {"nvidia-utils-570-server": "nvidia-smi", "docker.io": "docker", "nvidia-container-toolkit": "nvidia-ctk"}
BARE_TOOLS = ("apt-get", "ubuntu-drivers", "modprobe", "systemctl", "gpg")


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
    if bare:
        for tool in BARE_TOOLS:
            _write(bin_dir / tool, RECORDER, {"PACKAGES": PACKAGES})


def calls(state_dir: Path, tool: str | None = None) -> list[dict]:
    path = state_dir / "calls.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if tool is None or r["tool"] == tool]


def stop_engine(state_dir: Path) -> None:
    pidfile = state_dir / "engine.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), 15)
        except OSError:
            pass
