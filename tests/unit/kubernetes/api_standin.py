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
  test sets per Service (`serve`), standing in for the pods behind it.
What it does not do: no controllers (nothing creates or deletes pods, no garbage collection, no
rollout), no admission, defaulting or schema validation, no field selectors, no auth, no RBAC, no
merge of lists by key, one namespace set per test.
"""

from __future__ import annotations

import json
import re
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

        def do_DELETE(self) -> None:
            key, _, _, _ = self._route()
            if key is None or key not in api.objects:
                return self._send(404, _status(404, "NotFound", f"{self.path} not found"))
            api.remove(*key)
            self._send(200, {"apiVersion": "v1", "kind": "Status", "status": "Success"})

    return Handler
