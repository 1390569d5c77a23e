"""The pack's example workflows: built as API graphs, written in ComfyUI's workflow (UI) format.

``python tests/comfyui/workflows.py COMFYUI_DIR`` starts a ComfyUI with the pack, reads
``/object_info`` (which inputs are widgets, in which order), writes
``src/whichway/comfyui/pack/example_workflows/*.json`` (what ComfyUI lists under the pack's
templates) and, with ``--screenshot PNG``, loads the morph workflow into ComfyUI's own page in
headless Chromium and saves a picture of the graph for the docs.

:func:`to_api` reads a workflow back into an API graph (the inverse of :func:`to_ui`), which is
how the tests queue the shipped files on a real server.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
PACK = Path(__file__).resolve().parents[2] / "src" / "whichway" / "comfyui" / "pack"


class Graph:
    """An API-format graph built node by node: ``add`` returns the node's id."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, **inputs: Any) -> str:
        key = str(len(self.nodes) + 1)
        self.nodes[key] = {"class_type": class_type, "inputs": inputs}
        return key

    def encode(self, clip: list, text: str) -> list:
        return [self.add("CLIPTextEncode", clip=clip, text=text), 0]

    def sampler(
        self,
        model: list,
        noise: list,
        positive: list,
        negative: list,
        latent: list,
        *,
        steps: int,
        cfg: float,
    ) -> str:
        """The pack's Path sampler on ``latent`` (euler, normal, full denoise) at ``steps`` and
        ``cfg``."""
        return self.add(
            "WhichwaySampler",
            model=model,
            noise=noise,
            positive=positive,
            negative=negative,
            latent_image=latent,
            steps=steps,
            cfg=cfg,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
        )


def morph(ckpt: str = "v1-5-pruned-emaonly.safetensors", size: int = 512, steps: int = 25) -> dict:
    """Two prompts -> 9 frames on the OT path with one seed's noise for all -> SaveImage."""
    g = Graph()
    ckpt_node = g.add("CheckpointLoaderSimple", ckpt_name=ckpt)
    model, clip, vae = [ckpt_node, 0], [ckpt_node, 1], [ckpt_node, 2]
    path = g.add(
        "WhichwayPromptPath",
        conditioning_a=g.encode(clip, "a photo of a cat sitting on a sofa"),
        conditioning_b=g.encode(clip, "a photo of a dog sitting on a sofa"),
        frames=9,
        coupling="ot",
        seed=0,
        t_values="",
    )
    noise = g.add("WhichwayNoisePath", seed_a=42, seed_b=43, method="fixed", frames=9, t_values="")
    empty = g.add("EmptyLatentImage", width=size, height=size, batch_size=9)
    negative = g.encode(clip, "blurry, low quality")
    latent = g.sampler(model, [noise, 0], [path, 0], negative, [empty, 0], steps=steps, cfg=7.5)
    images = g.add("VAEDecode", samples=[latent, 0], vae=vae)
    g.add("SaveImage", images=[images, 0], filename_prefix="whichway/morph")
    g.add("PreviewAny", source=[path, 1])
    return g.nodes


def journey(
    ckpt: str = "v1-5-pruned-emaonly.safetensors", size: int = 512, steps: int = 25
) -> dict:
    """A FizzNodes-style schedule -> 49 frames (OT per segment, COG noise) -> MP4."""
    g = Graph()
    ckpt_node = g.add("CheckpointLoaderSimple", ckpt_name=ckpt)
    model, clip, vae = [ckpt_node, 0], [ckpt_node, 1], [ckpt_node, 2]
    frames = 49
    trip = g.add(
        "WhichwayJourney",
        clip=clip,
        schedule='"0": "a lighthouse at dawn, oil painting",\n'
        '"24": "a lighthouse in a storm, oil painting",\n'
        '"48": "a lighthouse under the stars, oil painting"',
        frames=frames,
        fps=12.0,
        coupling="ot",
        noise="fixed",
        seed=7,
        pacing="uniform",
        audio_feature="onset",
    )
    empty = g.add("EmptyLatentImage", width=size, height=size, batch_size=frames)
    negative = g.encode(clip, "blurry, low quality")
    latent = g.sampler(model, [trip, 1], [trip, 0], negative, [empty, 0], steps=steps, cfg=7.5)
    images = g.add("VAEDecode", samples=[latent, 0], vae=vae)
    video = g.add("CreateVideo", images=[images, 0], fps=12.0)
    g.add(
        "SaveVideo",
        video=[video, 0],
        filename_prefix="whichway/journey",
        format="mp4",
        codec="h264",
    )
    return g.nodes


EXAMPLES: dict[str, Callable[..., dict]] = {
    "whichway_ot_morph": morph,
    "whichway_journey_mp4": journey,
}


def _inputs(info: dict[str, Any]) -> list[tuple[str, Any, dict]]:
    """(name, type, options) of a node's inputs in ComfyUI's order (required, then optional)."""
    out = []
    for group in ("required", "optional"):
        for name in info["input_order"].get(group, []):
            spec = info["input"][group][name]
            kind = spec[0]
            out.append(
                (
                    name,
                    "COMBO" if isinstance(kind, list) else kind,
                    spec[1] if len(spec) > 1 else {},
                )
            )
    return out


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def to_ui(api: dict[str, dict], object_info: dict[str, Any]) -> dict[str, Any]:
    """An API graph as a ComfyUI workflow (nodes, links, widget values), laid out left to right
    by depth."""
    depth: dict[str, int] = {}

    def level(key: str) -> int:
        if key not in depth:
            links = [v for v in api[key]["inputs"].values() if _is_link(v)]
            depth[key] = 1 + max((level(v[0]) for v in links), default=-1)
        return depth[key]

    links: list[list[Any]] = []
    outputs: dict[str, list[list[int]]] = {
        key: [[] for _ in object_info[node["class_type"]]["output"]] for key, node in api.items()
    }
    nodes = []
    column_y: dict[int, float] = {}
    for order, key in enumerate(sorted(api, key=lambda k: (level(k), int(k)))):
        node = api[key]
        info = object_info[node["class_type"]]
        sockets, widgets = [], []
        for name, kind, options in _inputs(info):
            value = node["inputs"].get(name)
            if kind in WIDGET_TYPES:
                widgets.append(value if value is not None else options.get("default"))
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                continue
            link = None
            if _is_link(value):
                link = len(links) + 1
                links.append([link, int(value[0]), value[1], int(key), len(sockets), kind])
                outputs[value[0]][value[1]].append(link)
            sockets.append({"name": name, "type": kind, "link": link})
        rows = max(len(sockets), len(info["output"]))
        height = 40 + 22 * rows + 26 * len(widgets)
        height += 70 * sum(1 for _, _, o in _inputs(info) if o.get("multiline"))
        x = 40 + 340 * level(key)
        y = column_y.get(level(key), 40.0)
        column_y[level(key)] = y + height + 50
        nodes.append(
            {
                "id": int(key),
                "type": node["class_type"],
                "pos": [x, y],
                "size": [300, height],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": sockets,
                "outputs": [],
                "properties": {"Node name for S&R": node["class_type"]},
                "widgets_values": widgets,
            }
        )
    for entry in nodes:
        info = object_info[entry["type"]]
        entry["outputs"] = [
            {
                "name": name,
                "type": kind,
                "links": outputs[str(entry["id"])][slot],
                "slot_index": slot,
            }
            for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"]))
        ]
    return {
        "last_node_id": max(n["id"] for n in nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, dict]:
    """A ComfyUI workflow (as :func:`to_ui` writes it) back into an API graph."""
    by_link = {link[0]: link for link in workflow["links"]}
    api = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]
        values = list(node.get("widgets_values", []))
        sockets = {s["name"]: s for s in node.get("inputs", [])}
        inputs: dict[str, Any] = {}
        for name, kind, options in _inputs(info):
            if kind in WIDGET_TYPES:
                inputs[name] = values.pop(0)
                if options.get("control_after_generate"):
                    values.pop(0)
            elif sockets.get(name, {}).get("link") is not None:
                link = by_link[sockets[name]["link"]]
                inputs[name] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def write_examples(
    object_info: dict[str, Any], folder: Path = PACK / "example_workflows"
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in EXAMPLES.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(to_ui(build(), object_info), indent=1) + "\n")
        written.append(path)
    return written


def screenshot(port: int, workflow: dict[str, Any], out: Path) -> None:
    """ComfyUI's page in headless Chromium with ``workflow`` loaded, saved as a PNG."""
    import shutil
    import time
    import urllib.request

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # a first visit opens the template browser and the minimap: settings of a returning user
    for key, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False)):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/settings/{key}",
            data=json.dumps(value).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request).close()
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if driver.execute_script(
                "return !!(window.app && window.app.graph && window.app.canvas)"
            ):
                break
            time.sleep(0.5)
        time.sleep(3)
        driver.execute_script(
            "const wf = arguments[0]; return window.app.loadGraphData(wf);", workflow
        )
        time.sleep(3)
        driver.execute_script(
            "document.querySelectorAll('.p-dialog-close-button').forEach(b => b.click());"
            "const c = window.app.canvas; c.ds.scale = 0.62; c.ds.offset = [10, 30];"
            "c.setDirty(true, true); c.draw(true, true);"
        )
        time.sleep(2)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        from PIL import Image

        with Image.open(out) as image:  # the graph without the empty canvas below it
            image.crop((0, 0, image.width, min(image.height, 540))).save(out, optimize=True)
    finally:
        driver.quit()


def main(argv: list[str]) -> int:
    import tempfile
    import urllib.request

    sys.path.insert(0, str(Path(__file__).parent))
    from comfy_server import ComfyServer

    from whichway.comfyui.install import install

    comfy_dir = Path(argv[0])
    shot = Path(argv[argv.index("--screenshot") + 1]) if "--screenshot" in argv else None
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "custom_nodes").mkdir()
        install(base)
        server = ComfyServer.start(comfy_dir, base)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/object_info") as r:
                info = json.load(r)
            for path in write_examples(info):
                print(f"wrote {path}")
            if shot is not None:
                workflow = json.loads(
                    (PACK / "example_workflows" / "whichway_ot_morph.json").read_text()
                )
                screenshot(server.port, workflow, shot)
                print(f"wrote {shot}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
