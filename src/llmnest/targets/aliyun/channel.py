"""`llmnest keys/usage --deployment NAME` on Alibaba Cloud: the llmnest wrapper on the head node (the gateway's
settings and database, root only) run through Cloud Assistant, the account's own authenticated channel, so
the instance opens no port for it.

Cloud Assistant returns one output stream and keeps it with the invocation, so the script frames what the
command printed: one line `llmnest-channel CODE STDOUT STDERR`, each stream gzipped and Base64-encoded (`keys ls
--json` of 200 keys: 81 KB of JSON, 2.8 KB framed, well inside the output Cloud Assistant keeps). Arguments are shell-quoted one by
one; nothing secret is ever in them (a new key travels as its SHA-256, see gateway/remote_admin.py).
"""

from __future__ import annotations

import base64
import gzip
import re
import shlex
from typing import Any

from ... import state
from ...errors import BadInput, LlmnestError
from ...gateway.remote_admin import ChannelResult

WRAPPER = "/usr/local/bin/llmnest"  # written by the bootstrap (bootstrap.sh: start_gateway)
FRAME = "llmnest-channel"
TIMEOUT_S = 60
FRAME_RE = re.compile(rf"^{FRAME} (\d+) ([A-Za-z0-9+/=]*) ([A-Za-z0-9+/=]*)$", re.MULTILINE)


def admin_script(argv: list[str]) -> str:
    """The Cloud Assistant script that runs `llmnest ARGV...` with the gateway's settings and frames its result."""
    if any("\0" in arg for arg in argv):
        raise BadInput("an argument holds a NUL character, which no command line can carry")
    command = " ".join(shlex.quote(arg) for arg in argv)
    return (
        "out=$(mktemp) err=$(mktemp)\n"
        "trap 'rm -f \"$out\" \"$err\"' EXIT\n"
        f"\"${{LLMNEST_ROOT:-}}{WRAPPER}\" {command} >\"$out\" 2>\"$err\" </dev/null\n"
        "code=$?\n"
        f"printf '\\n{FRAME} %s %s %s\\n' \"$code\" \"$(gzip -c <\"$out\" | base64 -w0)\" \"$(gzip -c <\"$err\" | base64 -w0)\"\n"
        "exit \"$code\"\n"
    )


def _unpack(text: str, name: str) -> str:
    try:
        return gzip.decompress(base64.b64decode(text)).decode(errors="replace") if text else ""
    except (ValueError, OSError, EOFError):  # binascii.Error is a ValueError, BadGzipFile an OSError
        raise LlmnestError(f"the answer from {name}'s instance is garbled (not gzip in Base64)") from None


def parse(result: dict[str, Any], name: str) -> ChannelResult:
    """The framed result of `admin_script` from a Cloud Assistant result; a run that did not get as far as
    framing (no llmnest on the instance, the run timed out, output cut off) is a failure naming why."""
    found = FRAME_RE.findall(result["output"] or "")
    if result.get("dropped"):
        raise LlmnestError(f"the answer from {name}'s instance was longer than Cloud Assistant keeps "
                           f"({result['dropped']} bytes cut off)")
    if not found:
        tail = (result["output"] or result["error"] or "").strip().splitlines()[-1:]
        raise LlmnestError(f"Cloud Assistant could not run llmnest on {name}'s instance {result['instance_id']} "
                           f"({result['status']}, exit {result['exit_code']}): {tail[0] if tail else 'no output'}")
    code, out, err = found[-1]
    if int(code) in (126, 127):  # the shell's "cannot execute" / "not found": no wrapper yet
        raise LlmnestError(f"{name}'s instance has no llmnest gateway yet (its bootstrap writes {WRAPPER} once "
                           f"the engine answers); see `llmnest status {name}`")
    return ChannelResult(int(code), _unpack(out, name), _unpack(err, name))


class CloudAssistantChannel:
    """Runs `llmnest ARGV...` on the deployment's head node through Cloud Assistant (RunCommand, then
    DescribeInvocationResults until InvocationStatus says it ended)."""

    def __init__(self, dep: state.Deployment) -> None:
        self.dep = dep

    def run(self, argv: list[str]) -> ChannelResult:
        from .service import run_on_head  # the Alibaba Cloud SDKs load only when a command is sent

        return parse(run_on_head(self.dep, admin_script(argv), "admin", TIMEOUT_S), self.dep.name)
