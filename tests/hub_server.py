"""A stand-in for the Hugging Face Hub's HTTP endpoint on 127.0.0.1 (``HF_ENDPOINT``).

It serves the file downloads ``hf_hub_download`` makes (HEAD for the metadata, then GET) and
answers the API calls a push starts with. Each path can be given a status instead of content,
to play a server error, a rejected token or a missing file. Every request's headers are kept,
so a test can check that a token never leaves in a form it should not.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0" * 40


class HubServer:
    def __init__(self, files: dict[str, bytes] | None = None, statuses: dict[str, int] | None = None):
        self.files = dict(files or {})  # "org/name/filename" -> content
        self.statuses = dict(statuses or {})  # "path suffix" or "METHOD path suffix" -> HTTP status
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, body: bytes | None):
                hub.requests.append((self.command, self.path, dict(self.headers)))
                for key, status in hub.statuses.items():
                    method, _, suffix = key.rpartition(" ")
                    if self.path.split("?")[0].endswith(suffix) and method in ("", self.command):
                        payload = json.dumps({"error": f"status {status}"}).encode()
                        self.send_response(status)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":  # org/name/resolve/rev/file
                    content = hub.files.get("/".join(parts[:2] + parts[4:]))
                    if content is None:
                        self.send_response(404)
                        self.send_header("X-Error-Code", "EntryNotFound")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(200)
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", f'"{hashlib.sha1(content).hexdigest()}"')
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if body is not None:
                        self.wfile.write(content)
                    return
                payload = json.dumps({"error": "not served by this stand-in"}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_HEAD(self):
                self._answer(None)

            def do_GET(self):
                self._answer(b"")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._answer(b"")

        return Handler
