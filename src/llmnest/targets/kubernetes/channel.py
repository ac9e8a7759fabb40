"""`llmnest keys/usage --deployment NAME` on Kubernetes: `llmnest ARGV...` run in a Ready gateway pod through
the API server's pods/exec (what `kubectl exec` does: authenticated by the kubeconfig, authorised by RBAC
`get` and `create` on `pods/exec`, no port opened). The gateway container has the gateway's database URL in
$LLMNEST_GATEWAY_DB, which `llmnest keys` and `llmnest usage` read by default.

Exec carries an argument list, no shell: nothing is quoted and nothing in an argument is interpreted; no
secret is ever in one (a new key travels as its SHA-256, see gateway/remote_admin.py; the chat `up` checks
reads the key on stdin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ... import state
from ...errors import BadInput, LlmnestError
from ...gateway.remote_admin import ChannelResult
from .names import api_url, name_of
from .placement import placement_of

if TYPE_CHECKING:
    from .client import Cluster, ExecFailed

CONTAINER = "gateway"  # the container of the gateway pod (gateway.py)
TIMEOUT_S = 60
NOT_RUNNABLE = (126, 127)  # a shell's "cannot execute" / "not found", as some runtimes report a missing command

# One chat completion from inside the gateway pod to the gateway's Service, with the key read on stdin (never in
# the command, which the API server may keep in its audit log); stdlib only, no proxy. Prints STATUS then the body.
CHAT_SCRIPT = """\
import json, sys, urllib.error, urllib.request
url, model = sys.argv[1:3]
key = sys.stdin.read().strip()
body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
req = urllib.request.Request(url + "/chat/completions", body,
                             {"Content-Type": "application/json", "Authorization": "Bearer " + key})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=60) as resp:
        code, text = resp.status, resp.read()
except urllib.error.HTTPError as exc:
    code, text = exc.code, exc.read()
except OSError as exc:
    code, text = 0, str(exc).encode()
print(code)
print(text[:300].decode(errors="replace"))
"""


def exec_command(argv: list[str]) -> list[str]:
    """The exact command exec runs in the gateway container for `llmnest ARGV...`."""
    if any("\0" in arg for arg in argv):
        raise BadInput("an argument holds a NUL character, which no command line can carry")
    return ["llmnest", *argv]


def service_url(deployment: str, namespace: str, port: int) -> str:
    """The gateway's Service as pods in the cluster reach it (cluster DNS, the Service's port)."""
    return api_url(f"{name_of(deployment, 'gateway')}.{namespace}.svc.cluster.local", port)


def chat_command(deployment: str, namespace: str, port: int, model: str) -> list[str]:
    """The exact command that sends one chat through the gateway's Service from the gateway pod (key on stdin)."""
    return ["python3", "-c", CHAT_SCRIPT, service_url(deployment, namespace, port), model]


def failure_line(exc: ExecFailed, dep: state.Deployment, pod: str, program: str) -> str:
    """Why an exec into the gateway pod `pod` did not run, as one line a person can act on."""
    place = placement_of(dep.spec)
    if exc.code == 403:
        return (f"your kubeconfig user may not exec into the gateway pods of {dep.name}: it needs `get` and `create` "
                f"on pods/exec in namespace {place.namespace} (RBAC; check with `kubectl auth can-i create pods/exec "
                f"-n {place.namespace}`)")
    if exc.code == 404:
        return f"the gateway pod {pod} of {dep.name} went away meanwhile; try again (`llmnest status {dep.name}`)"
    if "executable file not found" in exc.message or "no such file or directory" in exc.message:
        return no_program_line(dep, program)
    what = f"HTTP {exc.code}" if exc.code else "no answer"
    return f"cannot exec into the gateway pod {pod} of {dep.name} ({what}): {exc.message or 'no message'}"


def no_program_line(dep: state.Deployment, program: str) -> str:
    return (f"the gateway image {placement_of(dep.spec).gateway_image} of {dep.name} has no `{program}` on its PATH; "
            "use an image with llmnest installed (placement gateway_image)")


class PodExecChannel:
    """Runs `llmnest ARGV...` (or another command) in a Ready gateway pod of the deployment, through exec."""

    def __init__(self, dep: state.Deployment, cluster: Cluster) -> None:
        self.dep = dep
        self.cluster = cluster

    def pod(self) -> str:
        pods = self.cluster.ready_pods(self.dep.name, "gateway")
        if not pods:
            raise LlmnestError(f"{self.dep.name} has no ready gateway pod now; `llmnest status {self.dep.name}` "
                               "says why")
        return pods[0]

    def execute(self, command: list[str], stdin: str | None = None) -> ChannelResult:
        """`command` in the gateway container; a command that could not run at all is one LlmnestError line."""
        from .client import ExecFailed

        pod = self.pod()
        try:
            code, out, err = self.cluster.exec(pod, CONTAINER, command, stdin=stdin, timeout=TIMEOUT_S)
        except ExecFailed as exc:
            raise LlmnestError(failure_line(exc, self.dep, pod, command[0])) from None
        if code in NOT_RUNNABLE:
            raise LlmnestError(no_program_line(self.dep, command[0]))
        return ChannelResult(code, out, err)

    def run(self, argv: list[str]) -> ChannelResult:
        return self.execute(exec_command(argv))
