"""A scripted OpenAI-style chat-completions server for testing firm's OpenAI-compatible critic over real HTTP.

Run as a separate process: ``python openai_stub_server.py``; it binds a free port on 127.0.0.1 and prints it as its
first line of output. Standard library only, so it starts fast.

Each request scripts its own reply through a directive embedded in its text (the judge request's instruction, which
the critic's template copies into the prompt): ``<<stub {"key": "a", "answer": "..."}>>stub``. Fields:

- ``key``: names the item; attempts are counted per key (0, 1, 2, ...).
- ``fail``: the first ``fail`` attempts fail: with HTTP ``status`` (default 503) and ``error`` as the message, or,
  when ``status`` is 0, by hanging ``hang`` seconds before answering (a timeout for the client).
- ``delay``: seconds to wait before a successful answer.
- ``answer``: the assistant's text; ``finish``: its finish_reason (default "stop").
- ``retry_after``: a Retry-After header value sent with failures.
- ``top``: {token: logprob} used as the top logprobs of the last ``top_char`` character in the answer.

Control endpoints: ``GET /_log`` lists the requests seen (headers and body), ``GET /_stats`` gives the most requests
in flight at once, ``POST /_reset`` clears both.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIRECTIVE = re.compile(r"<<stub (.*?)>>stub", re.DOTALL)

_lock = threading.Lock()
_log: list[dict[str, Any]] = []
_attempts: dict[str, int] = {}
# Requests still hanging from an earlier test must not count as in flight for the next one: counts are kept per
# generation, and a reset starts a new generation.
_generation = 0
_in_flight: dict[int, int] = {}
_max_in_flight = 0


def _directive(body: dict[str, Any]) -> dict[str, Any]:
    for message in reversed(body.get("messages", [])):
        content = message.get("content")
        parts = (
            [content] if isinstance(content, str) else [p.get("text", "") for p in content if p.get("type") == "text"]
        )
        for text in parts:
            match = DIRECTIVE.search(text)
            if match:
                return dict(json.loads(match.group(1)))
    return {}


def _logprobs(answer: str, top: dict[str, float], top_char: str) -> dict[str, Any]:
    """One token per character; the last ``top_char`` gets the scripted top logprobs."""
    last = answer.rfind(top_char) if top_char else -1
    content = []
    for i, ch in enumerate(answer):
        alts = top if i == last else {ch: 0.0}
        logprob = alts.get(ch, 0.0)
        content.append(
            {
                "token": ch,
                "logprob": logprob,
                "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alts.items()],
            }
        )
    return {"content": content}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def do_GET(self) -> None:
        with _lock:
            if self.path == "/_log":
                self._send(200, _log)
            elif self.path == "/_stats":
                self._send(200, {"max_in_flight": _max_in_flight})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        global _generation, _max_in_flight
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/_reset":
            with _lock:
                _log.clear()
                _attempts.clear()
                _generation += 1
                _max_in_flight = 0
            self._send(200, {})
            return
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        script = _directive(body)
        key = str(script.get("key", ""))
        with _lock:
            _log.append({"headers": dict(self.headers.items()), "body": body})
            attempt = _attempts.get(key, 0)
            _attempts[key] = attempt + 1
            generation = _generation
            _in_flight[generation] = _in_flight.get(generation, 0) + 1
            _max_in_flight = max(_max_in_flight, _in_flight[generation])
        try:
            self._reply(script, attempt, body)
        finally:
            with _lock:
                _in_flight[generation] -= 1

    def _reply(self, script: dict[str, Any], attempt: int, body: dict[str, Any]) -> None:
        if attempt < int(script.get("fail", 0)):
            status = int(script.get("status", 503))
            if status == 0:
                time.sleep(float(script.get("hang", 5.0)))
            else:
                headers = {"Retry-After": str(script["retry_after"])} if "retry_after" in script else {}
                self._send(status, {"error": {"message": script.get("error", "scripted failure")}}, headers)
                return
        time.sleep(float(script.get("delay", 0.0)))
        answer = str(script.get("answer", "no directive"))
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "finish_reason": script.get("finish", "stop"),
        }
        if body.get("logprobs"):
            choice["logprobs"] = _logprobs(answer, script.get("top", {}), str(script.get("top_char", "")))
        self._send(200, {"id": "stub", "object": "chat.completion", "model": body.get("model"), "choices": [choice]})


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
