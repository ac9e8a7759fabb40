"""A stand-in for a vLLM/SGLang server: an OpenAI chat endpoint that checks the API key.

Run as `python fake_engine.py --port P [--api-key K]` (the key may also come from VLLM_API_KEY, as
the docker runtime passes it). A request with "stream": true gets server-sent chunks with usage. FAKE_ENGINE_MODE=crash makes it log a CUDA out-of-memory error
(including the key, to test that log tails are redacted) and exit instead of serving.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def serve(port: int, key: str | None, model: str) -> HTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            if self.path != "/health":  # the gateway's health checks every few seconds
                sys.stderr.write(f"INFO: {fmt % args}\n")

        def do_GET(self) -> None:
            self._answer(200 if self.path == "/health" else 404, {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if key and self.headers.get("Authorization") != f"Bearer {key}":
                self._answer(401, {"error": "Unauthorized"})
            elif self.path != "/v1/chat/completions" or body.get("model") != model:
                self._answer(404, {"error": f"no such model {body.get('model')!r}"})
            elif body.get("stream"):  # as the gateway asks (it assembles a non-streamed answer from it)
                self._stream(model)
            else:
                self._answer(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}]})

        def _stream(self, served: str) -> None:
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            chunks = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": served,
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]},
                      {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": served,
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}]
            data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _answer(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return HTTPServer(("127.0.0.1", port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--served-model-name", required=True)
    args, _ = parser.parse_known_args()
    key = args.api_key or os.environ.get("VLLM_API_KEY")
    print(f"INFO: starting engine for {args.served_model_name} on port {args.port}", flush=True)
    if os.environ.get("FAKE_ENGINE_MODE") == "crash":
        print(f"INFO: server args api_key={key}", flush=True)
        print("ERROR: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        sys.exit(1)
    serve(args.port, key, args.served_model_name).serve_forever()


if __name__ == "__main__":
    main()
