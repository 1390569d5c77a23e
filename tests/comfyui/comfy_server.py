"""A real ComfyUI server for tests: started on a free loopback port, stopped afterwards.

``ComfyServer.start(comfy_dir, base_dir)`` runs ``main.py --cpu`` of an unpacked ComfyUI with
``--base-directory base_dir`` (its custom_nodes/, models/, input/, output/), waits for
``/object_info`` and offers the HTTP calls the tests make: ``POST /prompt``, ``GET /history``,
``GET /view``.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    body: Any


class ComfyServer:
    def __init__(self, process: subprocess.Popen, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @classmethod
    def start(cls, comfy_dir: Path, base_dir: Path, timeout: float = 180.0) -> ComfyServer:
        port = free_port()
        log = base_dir / "server.log"
        (base_dir / "user").mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "main.py",
                    "--cpu",
                    "--listen",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--disable-auto-launch",
                    "--base-directory",
                    str(base_dir),
                    "--database-url",
                    "sqlite:///:memory:",
                ],
                cwd=comfy_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        server = cls(process, port, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with {process.returncode}:\n{server.log_tail()}"
                )
            try:
                if server.get("/object_info/CheckpointLoaderSimple").status == 200:
                    return server
            except OSError:
                pass
            time.sleep(0.5)
        server.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{server.log_tail()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # --- HTTP

    def _call(self, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(url, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get(self, path: str) -> Response:
        status, body = self._call(path)
        return Response(status, json.loads(body) if body else None)

    def queue(self, graph: dict[str, Any]) -> Response:
        payload = json.dumps({"prompt": graph, "client_id": uuid.uuid4().hex}).encode()
        status, body = self._call("/prompt", payload)
        return Response(status, json.loads(body))

    def run(self, graph: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        """Queue ``graph`` and wait for its history entry (finished or failed)."""
        queued = self.queue(graph)
        if queued.status != 200:
            raise AssertionError(f"graph refused ({queued.status}): {queued.body}")
        prompt_id = queued.body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}").body
            entry = history.get(prompt_id) if history else None
            status = (entry or {}).get("status", {})
            if status.get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.2)
        raise AssertionError(f"graph did not finish in {timeout:.0f} s:\n{self.log_tail()}")

    def images(self, entry: dict[str, Any], node: str) -> list[Any]:
        """The images a SaveImage node wrote, fetched through /view, as uint8 arrays (h, w, 3)."""
        import numpy as np
        from PIL import Image

        out = []
        for image in entry["outputs"][node]["images"]:
            query = urllib.parse.urlencode(
                {
                    "filename": image["filename"],
                    "subfolder": image["subfolder"],
                    "type": image["type"],
                }
            )
            status, body = self._call(f"/view?{query}")
            assert status == 200, f"/view answered {status}"
            out.append(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
        return out
