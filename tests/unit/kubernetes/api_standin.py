"""An in-process stand-in for the Kubernetes API server, for the client's tests (no API server can run here).

It is a real HTTP server on 127.0.0.1 speaking the REST paths lightkube calls, with what llmnest uses:
- server-side apply (PATCH application/apply-patch+yaml): upsert; the applied object replaces the
  previous one except uid, creationTimestamp and status; `generation` moves when `spec` changes;
  `spec.replicas` set through the scale subresource belongs to that Update's manager: an apply without
  the field keeps it, an apply with it conflicts (409) unless `force`;
- get, list and watch (ADDED/MODIFIED/DELETED lines; resumes after a resourceVersion) with label
  selectors (=, ==, !=, in, notin, exists, !exists);
- delete (404 when absent), the scale subresource (get, patch), pod logs (tailLines, follow);
- status, pods, events and log lines set by the test (`put`, `set_status`, `log`);
- the service proxy (GET /api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH) answered by a function the
  test sets per Service (`serve`), standing in for the pods behind it;
- pods/exec over WebSockets as the API server speaks it to lightkube: GET .../pods/NAME/exec?command=...
  upgraded (RFC 6455 server handshake, subprotocol v5.channel.k8s.io, else v4), then binary frames whose
  first byte is the channel: the client's stdin on 0 (and 255 0: stdin closed, v5), the command's stdout
  on 1 and stderr on 2, and on 3 one Status: `{"status": "Success"}`, or `"Failure"` with reason
  `NonZeroExitCode` and details.causes `[{"reason": "ExitCode", "message": "N"}]` (k8s.io/client-go's
  remotecommand and lightkube's ExecAccumulator read exactly these), then a close frame. The command is
  answered by a function the test sets per pod or pod name prefix (`on_exec`), which may also return a
  Status of its own (a runtime that could not start the command); a missing pod is 404 and a container
  not in the pod 400 before the upgrade, and `forbid_exec` makes it 403 (RBAC without pods/exec);
- SelfSubjectAccessReviews (POST, `kubectl auth can-i`): allowed, but pods/exec while `forbid_exec`.
What it does not do: no controllers (nothing creates or deletes pods, no garbage collection, no
rollout), no admission, defaulting or schema validation, no field selectors, no auth (so the proxy's
answer never sees the caller's Authorization, which a real API server deletes after authenticating), no
RBAC (but `forbid_exec`), no merge of lists by key, one namespace set per test; exec has no TTY, resize
channel or streaming while the command runs (its output is sent when it ends, in 32 KiB frames), and
answers pings with pongs but never pings itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
                  r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$")
PROXY = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/services/(?P<name>[^/:]+)(?::(?P<port>[^/]+))?/proxy(?P<path>/.*)?$")
Key = tuple[str, str, str]  # plural, namespace ("" for cluster-scoped), name


def matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", selector):
        term = term.strip()
        if found := re.match(r"^([^ !=]+)\s+(in|notin)\s+\((.*)\)$", term):
            key, op, values = found[1], found[2], {v.strip() for v in found[3].split(",")}
            if (labels.get(key) in values) != (op == "in"):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class ApiStandIn:
    def __init__(self) -> None:
        self.objects: dict[Key, dict] = {}
        self.history: list[tuple[int, str, Key, dict]] = []  # (resourceVersion, type, key, object)
        self.logs: dict[tuple[str, str], list[str]] = {}  # (pod, container) -> lines
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, content type)
        self.proxies: dict[tuple[str, str], Any] = {}  # (namespace, service) -> path -> (code, text)
        self.execs: dict[tuple[str, str], Any] = {}  # (namespace, pod) -> on_exec's answer
        self.exec_calls: list[tuple[str, str, list[str]]] = []  # (pod, container, command)
        self.forbid_exec = False
        self.version = 0
        self.lock = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> ApiStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- what the test sets ---------------------------------------------------------------------
    def _record(self, kind: str, key: Key, obj: dict) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.history.append((self.version, kind, key, json.loads(json.dumps(obj))))
        self.lock.notify_all()

    def put(self, plural: str, obj: dict) -> None:
        """Create or replace an object as a controller would (pods, events)."""
        with self.lock:
            key = (plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            obj["metadata"].setdefault("uid", str(uuid.uuid4()))
            kind = "MODIFIED" if key in self.objects else "ADDED"
            self.objects[key] = obj
            self._record(kind, key, obj)

    def remove(self, plural: str, namespace: str, name: str) -> None:
        with self.lock:
            obj = self.objects.pop((plural, namespace, name))
            self._record("DELETED", (plural, namespace, name), obj)

    def set_status(self, plural: str, namespace: str, name: str, status: dict) -> None:
        with self.lock:
            obj = self.objects[(plural, namespace, name)]
            obj["status"] = status
            self._record("MODIFIED", (plural, namespace, name), obj)

    def log(self, pod: str, container: str, *lines: str) -> None:
        with self.lock:
            self.logs.setdefault((pod, container), []).extend(lines)
            self.lock.notify_all()

    def serve(self, namespace: str, service: str, answer: Any) -> None:
        """What the pods behind `service` answer through the proxy: answer(path) -> (status, text)."""
        self.proxies[(namespace, service)] = answer

    def on_exec(self, namespace: str, pod: str, answer: Any) -> None:
        """What an exec into `pod` (or any pod whose name starts with it: a workload's pods) does:
        answer(container, command, stdin) -> (exit code, stdout, stderr), or a Status dict sent as it is;
        `stdin()` returns what the client wrote until it closed stdin."""
        self.execs[(namespace, pod)] = answer

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        return self.objects.get((plural, namespace, name))

    # --- the API --------------------------------------------------------------------------------
    def apply(self, key: Key, body: dict, manager: str, force: bool) -> tuple[int, dict]:
        with self.lock:
            old = self.objects.get(key)
            meta = body.setdefault("metadata", {})
            me = f"{manager}/Apply"  # managers are (name, operation): an Update by the same name is another owner
            owners = {"spec.replicas": me} if "replicas" in body.get("spec", {}) else {}
            if old:
                holder = old["metadata"].get("x-owners", {}).get("spec.replicas")
                if "spec.replicas" in owners and holder not in (None, me) and not force:
                    return 409, _status(409, "Conflict", f'Apply failed with 1 conflict: conflict with "{holder.split("/")[0]}": '
                                        ".spec.replicas")
                if "spec.replicas" not in owners and holder and holder != me:
                    body.setdefault("spec", {})["replicas"] = old["spec"]["replicas"]  # another manager's field stays
                    owners["spec.replicas"] = holder
                meta["uid"] = old["metadata"]["uid"]
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
                generation = old["metadata"]["generation"] + (old.get("spec") != body.get("spec"))
                if "status" in old:
                    body["status"] = old["status"]
            else:
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                generation = 1
            meta["generation"] = generation
            meta["managedFields"] = [{"manager": manager, "operation": "Apply"}]
            meta["x-owners"] = owners
            self.objects[key] = body
            self._record("MODIFIED" if old else "ADDED", key, body)
            return (200 if old else 201), _public(body)

    def scale(self, key: Key, replicas: int | None, manager: str) -> tuple[int, dict]:
        with self.lock:
            obj = self.objects.get(key)
            if obj is None:
                return 404, _status(404, "NotFound", f"{key[0]} {key[2]} not found")
            if replicas is not None:
                obj["spec"]["replicas"] = replicas
                obj["metadata"]["generation"] += 1
                obj["metadata"].setdefault("x-owners", {})["spec.replicas"] = f"{manager}/Update"
                self._record("MODIFIED", key, obj)
            return 200, {"apiVersion": "autoscaling/v1", "kind": "Scale",
                         "metadata": {"name": key[2], "namespace": key[1]},
                         "spec": {"replicas": obj["spec"].get("replicas", 1)},
                         "status": {"replicas": (obj.get("status") or {}).get("replicas", 0)}}


def _status(code: int, reason: str, message: str) -> dict:
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "message": message,
            "code": code}


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
EXEC_CHUNK = 32 * 1024  # the API server relays a stream as it reads it: io.Copy's 32 KiB buffer at most per frame


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame (RFC 6455 section 5.2)."""
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    if len(payload) < 1 << 16:
        return head + bytes([126]) + struct.pack("!H", len(payload)) + payload
    return head + bytes([127]) + struct.pack("!Q", len(payload)) + payload


def read_ws_frame(read: Any) -> tuple[int, bytes]:
    """One client frame (clients must mask): its opcode and unmasked payload."""
    first, second = read(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", read(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read(8))[0]
    if not second & 0x80:
        raise ValueError("an unmasked client frame")
    mask = read(4)
    data = read(length)
    return first & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def exec_status(code: int) -> dict:
    """The Status the API server sends on channel 3 when the command ended with `code`."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "message": f"command terminated with non-zero exit code: {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def _public(obj: dict) -> dict:
    out = json.loads(json.dumps(obj))
    out["metadata"].pop("x-owners", None)
    return out


def _handler(api: ApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream_start(self, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Connection", "close")  # the body ends when the stream does
            self.end_headers()
            self.close_connection = True

        def _route(self) -> tuple[Key | None, str | None, dict[str, str], re.Match | None]:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            found = PATH.match(url.path)
            api.requests.append((self.command, url.path, self.headers.get("Content-Type")))
            if not found:
                return None, None, query, None
            key = (found["plural"], found["ns"] or "", found["name"] or "")
            return key, found["sub"], query, found

        def _proxy(self, found: re.Match) -> None:
            api.requests.append((self.command, urlparse(self.path).path, None))
            svc = api.objects.get(("services", found["ns"], found["name"]))
            answer = api.proxies.get((found["ns"], found["name"]))
            if svc is None:
                return self._send(404, _status(404, "NotFound", f'services "{found["name"]}" not found'))
            if answer is None:  # the API server's answer when no endpoint is ready behind the Service
                return self._send(503, _status(503, "ServiceUnavailable", "no endpoints available for service"))
            code, text = answer(found["path"] or "/")
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if proxied := PROXY.match(urlparse(self.path).path):
                return self._proxy(proxied)
            key, sub, query, _ = self._route()
            if key is None:
                return self._send(404, _status(404, "NotFound", self.path))
            if sub == "exec" and key[0] == "pods":
                return self._exec(key, parse_qs(urlparse(self.path).query))
            if sub == "log":
                return self._logs(key, query)
            if sub == "scale":
                return self._send(*api.scale(key, None, ""))
            if key[2]:
                obj = api.objects.get(key)
                return self._send(200, _public(obj)) if obj else self._send(
                    404, _status(404, "NotFound", f'{key[0]} "{key[2]}" not found'))
            if query.get("watch") in {"true", "1"}:
                return self._watch(key, query)
            with api.lock:
                items = [_public(o) for k, o in api.objects.items()
                         if k[0] == key[0] and (not key[1] or k[1] == key[1])
                         and matches(o["metadata"].get("labels", {}), query.get("labelSelector"))]
                return self._send(200, {"apiVersion": "v1", "kind": "List", "items": items,
                                        "metadata": {"resourceVersion": str(api.version)}})

        def _exec(self, key: Key, query: dict[str, list[str]]) -> None:
            pod = api.objects.get(key)
            container = query.get("container", [""])[-1]
            offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            protocol = next((p for p in EXEC_PROTOCOLS if p in offered), None)
            if self.headers.get("Upgrade", "").lower() != "websocket" or protocol is None:
                return self._send(400, _status(400, "BadRequest", "exec needs a WebSocket upgrade, channel protocol"))
            if api.forbid_exec:
                message = (f'pods "{key[2]}" is forbidden: User "tester" cannot create resource "pods/exec" in API '
                           f'group "" in the namespace "{key[1]}"')
                return self._send(403, _status(403, "Forbidden", message))
            if pod is None:
                return self._send(404, _status(404, "NotFound", f'pods "{key[2]}" not found'))
            if container not in [c["name"] for c in pod["spec"]["containers"]]:
                message = f"container {container} is not valid for pod {key[2]}"
                return self._send(400, _status(400, "BadRequest", message))
            accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest())
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept.decode())
            self.send_header("Sec-WebSocket-Protocol", protocol)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            stdin, stdin_closed, closed = bytearray(), threading.Event(), threading.Event()
            send_lock = threading.Lock()

            def send(opcode: int, payload: bytes) -> None:
                with send_lock:
                    self.wfile.write(ws_frame(opcode, payload))
                    self.wfile.flush()

            def read_exactly(n: int) -> bytes:
                data = self.rfile.read(n)
                if len(data) < n:
                    raise EOFError
                return data

            def receive() -> None:  # the client's frames: stdin, its close of stdin, pings, its close
                try:
                    while True:
                        opcode, payload = read_ws_frame(read_exactly)
                        if opcode == 0x8:
                            return
                        if opcode == 0x9:
                            send(0xA, payload)
                        elif opcode == 0x2 and payload[:1] == b"\x00":
                            stdin.extend(payload[1:])
                        elif opcode == 0x2 and payload == bytes((255, 0)):
                            stdin_closed.set()
                except (EOFError, OSError, ValueError):
                    return
                finally:
                    closed.set()
                    stdin_closed.set()

            threading.Thread(target=receive, daemon=True).start()
            command = query.get("command", [])
            api.exec_calls.append((key[2], container, command))
            answer = next((a for (ns, prefix), a in api.execs.items() if ns == key[1] and key[2].startswith(prefix)),
                          None)

            def read_stdin() -> bytes:
                stdin_closed.wait(30)
                return bytes(stdin)

            if answer is None:
                result: Any = _status(500, "InternalError", f"nothing answers exec in pod {key[2]} (the test set none)")
            else:
                result = answer(container, command, read_stdin)
            try:
                if isinstance(result, dict):
                    status = result
                else:
                    code, out, err = result
                    for channel, data in ((1, out), (2, err)):  # in 32 KiB pieces, as io.Copy's buffer
                        data = data.encode() if isinstance(data, str) else data
                        for at in range(0, len(data), EXEC_CHUNK):
                            send(0x2, bytes((channel,)) + data[at:at + EXEC_CHUNK])
                    status = exec_status(code)
                send(0x2, b"\x03" + json.dumps(status).encode())
                send(0x8, struct.pack("!H", 1000))
                closed.wait(5)
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _watch(self, key: Key, query: dict[str, str]) -> None:
            since = int(query.get("resourceVersion") or 0)
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 2)
            self._stream_start("application/json")
            with api.lock:
                if not since:  # a fresh watch: the current objects as ADDED
                    pending = [(api.version, "ADDED", k, o) for k, o in api.objects.items()]
                    since = api.version
                else:
                    pending = []
            while True:
                for _, kind, k, obj in pending:
                    if k[0] == key[0] and (not key[1] or k[1] == key[1]) and matches(
                            obj["metadata"].get("labels", {}), query.get("labelSelector")):
                        try:
                            self.wfile.write((json.dumps({"type": kind, "object": _public(obj)}) + "\n").encode())
                            self.wfile.flush()
                        except OSError:
                            return
                with api.lock:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    api.lock.wait(min(remaining, 0.2))
                    pending = [h for h in api.history if h[0] > since]
                    since = api.version

        def _logs(self, key: Key, query: dict[str, str]) -> None:
            if (key[0], key[1], key[2]) not in api.objects:
                return self._send(404, _status(404, "NotFound", f'pods "{key[2]}" not found'))
            container = query.get("container", "")
            lines = api.logs.get((key[2], container), [])
            tail = int(query["tailLines"]) if "tailLines" in query else len(lines)
            self._stream_start("text/plain")
            sent = max(0, len(lines) - tail)
            while True:
                with api.lock:
                    lines = api.logs.get((key[2], container), [])
                    new, sent = lines[sent:], len(lines)
                try:
                    self.wfile.write("".join(f"{line}\n" for line in new).encode())
                    self.wfile.flush()
                except OSError:
                    return
                if query.get("follow") not in {"true", "1"} or key not in api.objects:
                    return
                with api.lock:
                    api.lock.wait(0.2)

        def do_PATCH(self) -> None:
            key, sub, query, _ = self._route()
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            manager = query.get("fieldManager", "")
            if key is None:
                return self._send(404, _status(404, "NotFound", self.path))
            if sub == "scale":
                return self._send(*api.scale(key, body.get("spec", {}).get("replicas"), manager or "scale"))
            if self.headers.get("Content-Type") != "application/apply-patch+yaml":
                return self._send(415, _status(415, "UnsupportedMediaType", "only server-side apply is modelled"))
            if not manager:
                return self._send(422, _status(422, "Invalid", "fieldManager is required for apply patch"))
            if body.get("metadata", {}).get("name") != key[2]:
                return self._send(400, _status(400, "BadRequest", "the name in the body does not match the URL"))
            return self._send(*api.apply(key, body, manager, query.get("force") == "true"))

        def do_POST(self) -> None:
            key, _, _, _ = self._route()
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if key is None or key[0] != "selfsubjectaccessreviews":
                return self._send(405, _status(405, "MethodNotAllowed", "only access reviews are created here"))
            asked = body.get("spec", {}).get("resourceAttributes") or {}
            denied = api.forbid_exec and (asked.get("resource"), asked.get("subresource")) == ("pods", "exec")
            return self._send(201, {**body, "status": {"allowed": not denied}})

        def do_DELETE(self) -> None:
            key, _, _, _ = self._route()
            if key is None or key not in api.objects:
                return self._send(404, _status(404, "NotFound", f"{self.path} not found"))
            api.remove(*key)
            self._send(200, {"apiVersion": "v1", "kind": "Status", "status": "Success"})

    return Handler
