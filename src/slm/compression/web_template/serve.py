"""Preview this folder in a browser: a static HTTP server (Python's standard library only) for local testing.

    python serve.py                 # http://127.0.0.1:8000/ with the headers that turn WebAssembly threads on
    python serve.py --no-isolation  # as a plain static host: one thread
    python serve.py --gzip          # also compress responses, as most production hosts and CDNs do

It sends ``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp``: with
them the page is cross-origin isolated, the browser gives it SharedArrayBuffer, and onnxruntime-web runs on
several threads. ``python -m http.server`` sends neither, so the page works there too, on one thread. This is a
preview server, not a production one: serve the folder from any static host (set the same two headers there).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import http.server
import os
from pathlib import Path

ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
COMPRESSIBLE = (".html", ".mjs", ".js", ".json", ".wasm", ".onnx", ".bin", ".md")


class Handler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus the isolation headers and optional gzip (compressed once, kept in memory)."""

    isolation = True
    compress = False
    _gzipped: dict[tuple[str, float], bytes] = {}

    def end_headers(self) -> None:
        if self.isolation:
            for name, value in ISOLATION.items():
                self.send_header(name, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = Path(self.translate_path(self.path))
        accepts = "gzip" in self.headers.get("Accept-Encoding", "")
        if not (self.compress and accepts and path.is_file() and path.suffix in COMPRESSIBLE):
            super().do_GET()
            return
        key = (str(path), path.stat().st_mtime)
        body = self._gzipped.get(key)
        if body is None:
            body = self._gzipped[key] = gzip.compress(path.read_bytes(), compresslevel=6)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the standard library's name)
        if os.environ.get("SLM_WEB_PREVIEW_LOG"):
            super().log_message(format, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description="Preview this folder (see the module docstring).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    parser.add_argument("--no-isolation", action="store_true", help="omit COOP/COEP (threads off)")
    parser.add_argument("--gzip", action="store_true", help="gzip responses when the browser accepts it")
    args = parser.parse_args()
    Handler.isolation = not args.no_isolation
    Handler.compress = args.gzip
    handler = functools.partial(Handler, directory=str(Path(__file__).resolve().parent))
    with http.server.ThreadingHTTPServer((args.host, args.port), handler) as server:
        port = server.server_address[1]
        print(f"serving {Path(__file__).resolve().parent} at http://{args.host}:{port}/ (Ctrl+C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
