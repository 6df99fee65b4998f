"""A deterministic OpenAI-compatible chat server on 127.0.0.1 (ephemeral port) for the interpret tests.

It answers the saescope prompts by rule, so scores are known in advance: the explanation of a feature
names the token with the highest total marked activation; the simulator predicts 10 on every token
an explanation quotes and 0 elsewhere; detection answers 1 for a fragment containing a quoted token;
fuzzing answers 1 when every highlighted token is quoted. Faults are planted by a quoted trigger
word in the explanation (MALFORMED, SHORT) or by queues of statuses / delays for the next requests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _terms(explanation: str) -> set[str]:
    out = set()
    for m in _QUOTED.finditer(explanation):
        out.add(json.loads(f'"{m.group(1)}"').strip().lower())
    return out


def _field(content: str, name: str) -> str:
    m = re.search(rf"^{name}(?: \(\d+\))?: (.*)$", content, flags=re.M)
    return m.group(1) if m else ""


class FakeLLM:
    """The server and what it saw. Use as a context manager; `base_url` ends in /v1."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[dict[str, Any]] = []
        self.statuses: deque[int] = deque()  # next requests answer with these HTTP statuses
        self.delays: deque[float] = deque()  # next requests sleep this long first
        self.with_logprobs = False
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.calls += 1
                    fake.bodies.append(body)
                    status = fake.statuses.popleft() if fake.statuses else 200
                    delay = fake.delays.popleft() if fake.delays else 0.0
                if delay:
                    time.sleep(delay)
                if status != 200:
                    self.send_response(status)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                    return
                text, logprobs = fake.answer(body)
                choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": "stop"}
                if logprobs is not None and body.get("logprobs"):
                    choice["logprobs"] = {"content": logprobs}
                payload = json.dumps({"id": "x", "object": "chat.completion", "choices": [choice],
                                      "usage": {"prompt_tokens": 100, "completion_tokens": 10}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeLLM":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the rules ------------------------------------------------------------------------------

    def answer(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
        system = body["messages"][0]["content"]
        content = body["messages"][-1]["content"]
        if system.startswith("You are studying"):
            totals: dict[str, int] = {}
            for token, level in re.findall(r"\[\[(.*?)\|(\d+)\]\]", content, flags=re.S):
                totals[token] = totals.get(token, 0) + int(level)
            best = max(sorted(totals), key=lambda t: totals[t])
            return json.dumps({"explanation": f"Fires on {json.dumps(best)}."}), None
        explanation = _field(content, "Explanation")
        terms = _terms(explanation)
        if "malformed" in terms:
            return "I think the activations are high", None
        if system.startswith("You predict"):
            tokens = json.loads(_field(content, "Tokens"))
            values = [10 if t.strip().lower() in terms else 0 for t in tokens]
            if "short" in terms:
                values = values[:-1]
            logprobs = [{"token": str(v), "logprob": 0.0,
                         "top_logprobs": [{"token": str(v), "logprob": -0.2231435513},  # p = 0.8
                                          {"token": "5", "logprob": -1.6094379124}]}  # p = 0.2
                        for v in values] if self.with_logprobs else None
            return json.dumps({"activations": values}), logprobs
        texts = json.loads(_field(content, "Fragments"))
        if "judge the highlights" in system or "written [[token]]" in system:
            answers = [int(all(m.strip().lower() in terms for m in re.findall(r"\[\[(.*?)\]\]", t, flags=re.S)))
                       for t in texts]
        else:
            answers = [int(any(term and term in t.lower() for term in terms)) for t in texts]
        return json.dumps({"answers": answers}), None
