"""Run as a script: serve one bundle on loopback, POST one request, print the reply and the heavy modules loaded.

    python tests/serve_once.py BUNDLE SUPPORT_DB ROUTE JSON_BODY

Used by the tests that check a served bundle never imports torch, transformers, sklearn or pandas.
"""

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import uvicorn

from slm.serving import ModelService, ServeConfig, create_app
from slm.serving.server import bind

HEAVY = {"torch", "transformers", "sklearn", "pandas"}


def main(bundle: str, support_db: str, route: str, body: str) -> None:
    config = ServeConfig(access_log=False, support_db=Path(support_db))
    service = ModelService.load([("served", Path(bundle))], config)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{route}"
    reply = json.loads(urllib.request.urlopen(urllib.request.Request(url, data=body.encode())).read())
    server.should_exit = True
    thread.join(30)  # a server thread still running ONNX Runtime while the interpreter tears down can crash it
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    print(json.dumps({"reply": reply, "heavy": heavy}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
