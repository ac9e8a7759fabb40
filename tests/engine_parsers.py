"""The engines' own command-line parsers, to check the commands llmnest renders.

vLLM's parser is the installed vLLM's (`make_arg_parser`, the one `vllm serve` and the OpenAI API
server build). SGLang's is SGLang's `prepare_server_args`, installed without its dependencies by
`make test` (`make engine-parsers`) under SGLANG_PARSER_DIR at the version of the default SGLang
image (lmsysorg/sglang:v0.5.23-cu129, used outside mainland China); it runs in a subprocess with
torchvision and torchcodec left out (media backends the parser does not use, whose builds here need
CUDA). The mainland EGS image's SGLang 0.4.6.post1 does not import here (it needs an older triton),
so its parser is not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SGLANG_PARSER_DIR = Path(os.environ.get("LLMNEST_SGLANG_PARSER_DIR", ROOT / ".cache" / "engine-parsers" / "sglang"))
SGLANG_VERSION = "0.5.23"  # lmsysorg/sglang:v0.5.23-cu129, the default SGLang image

_SGLANG = r'''
import contextlib, io, json, sys
import importlib.machinery
class Without(importlib.machinery.PathFinder):  # as if not installed: the parser does not need them
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in ("torchvision", "torchcodec"):
            return None
        return super().find_spec(name, path, target)
sys.meta_path = [Without if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
import sglang
from sglang.srt.server_args import prepare_server_args
out = []
for argv in json.loads(sys.stdin.read()):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            a = prepare_server_args(argv)
    except SystemExit as exc:
        out.append({"exit": exc.code, "stderr": err.getvalue()})
        continue
    out.append({"exit": 0, "version": sglang.__version__, "tp_size": a.tp_size, "nnodes": a.nnodes,
                "node_rank": a.node_rank, "dist_init_addr": a.dist_init_addr, "port": a.port,
                "api_key": a.api_key, "model_path": a.model_path,
                "mem_fraction_static": a.mem_fraction_static})
print(json.dumps(out))
'''


def vllm_parse(args: list[str]) -> dict:
    """vLLM's parse of an API-server command line; SystemExit on an unknown flag or bad value."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return vars(make_arg_parser(FlexibleArgumentParser()).parse_args(args))


def sglang_parse(commands: list[list[str]]) -> list[dict]:
    """SGLang's parse of each command line, in one subprocess: the parsed figures and exit 0, or
    the parser's exit code and message (2 on an unknown flag)."""
    paths = [str(SGLANG_PARSER_DIR / "sglang"), str(SGLANG_PARSER_DIR / "deps")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, "-c", _SGLANG], input=json.dumps(commands), capture_output=True,
                          text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"SGLang's parser did not run (make engine-parsers installs it): {done.stderr[-1500:]}")
    return json.loads(done.stdout.splitlines()[-1])
