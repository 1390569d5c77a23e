"""whichway's ComfyUI nodes on a real ComfyUI server (the vendored 0.3.64, ``COMFYUI_DIR``).

One server per session (a free loopback port, stopped at the end) with the pack installed by
``whichway.comfyui.install`` and a small random SD 1.x checkpoint built from ComfyUI's own module
classes (``tests/comfyui/build_checkpoint.py``; ``COMFYUI_CHECKPOINT`` reuses one built by CI).
Graphs are 64 x 64, 2 steps, euler, so each runs in seconds on a CPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "comfyui"))
import workflows  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
CKPT = "tiny-sd15.safetensors"
# ComfyUI imports these at start; without them the server cannot run here
COMFY_REQUIREMENTS = ("torchsde", "av", "alembic", "kornia", "spandrel", "aiohttp", "requests")

pytestmark = [
    pytest.mark.skipif(
        not COMFYUI_DIR or not (Path(COMFYUI_DIR) / "main.py").is_file(),
        reason="no ComfyUI: set COMFYUI_DIR to an unpacked ComfyUI (CI unpacks ../shared/vendor/)",
    ),
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in COMFY_REQUIREMENTS),
        reason="ComfyUI's requirements are not installed (pip install -r $COMFYUI_DIR/requirements.txt requests)",
    ),
    pytest.mark.timeout(900),
]

SEED, STEPS, CFG = 5, 2, 7.0


def build_checkpoint(out: Path) -> Path:
    subprocess.run(
        [sys.executable, str(HERE / "comfyui" / "build_checkpoint.py"), COMFYUI_DIR, str(out)],
        check=True,
        capture_output=True,
    )
    return out


# A test-only node that hands over a CONDITIONING of a shape no whichway family has (what an
# unknown text encoder would give), loaded by ComfyUI from custom_nodes/ beside the pack.
ODD_CONDITIONING_NODE = """
import torch


class OddConditioning:
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 512, "min": 1, "max": 8192})}}

    def run(self, width):
        return ([[torch.zeros(1, 77, width), {"pooled_output": torch.zeros(1, width)}]],)


NODE_CLASS_MAPPINGS = {"TestOddConditioning": OddConditioning}
"""


@pytest.fixture(scope="session")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    from whichway.comfyui.install import install

    base = tmp_path_factory.mktemp("comfyui")
    (base / "custom_nodes").mkdir()
    install(base)
    (base / "custom_nodes" / "whichway_test_odd_conditioning.py").write_text(ODD_CONDITIONING_NODE)
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    given = os.environ.get("COMFYUI_CHECKPOINT")
    if given and Path(given).is_file():
        (checkpoints / CKPT).symlink_to(Path(given).resolve())
    else:
        build_checkpoint(checkpoints / CKPT)
    server = ComfyServer.start(Path(COMFYUI_DIR), base)
    try:
        yield server
    finally:
        server.stop()


class Graph(workflows.Graph):
    """The example workflows' graph builder with the test graphs' pieces (the tiny checkpoint,
    ComfyUI's plain render, the pack's sampler at 64 x 64)."""

    def base(self) -> tuple[list, list, list]:
        ckpt = self.add("CheckpointLoaderSimple", ckpt_name=CKPT)
        return [ckpt, 0], [ckpt, 1], [ckpt, 2]

    def save(self, vae: list, latent: list, prefix: str) -> str:
        image = self.add("VAEDecode", samples=latent, vae=vae)
        return self.add("SaveImage", images=[image, 0], filename_prefix=prefix)

    def plain(self, model, clip, vae, negative, text: str, seed: int, prefix: str) -> str:
        """ComfyUI's own render of one prompt: KSampler on a batch of one."""
        empty = self.add("EmptyLatentImage", width=64, height=64, batch_size=1)
        latent = self.add(
            "KSampler",
            model=model,
            seed=seed,
            steps=STEPS,
            cfg=CFG,
            sampler_name="euler",
            scheduler="normal",
            positive=self.encode(clip, text),
            negative=negative,
            latent_image=[empty, 0],
            denoise=1.0,
        )
        return self.save(vae, [latent, 0], prefix)

    def path_sampler(self, model, vae, positive, negative, noise, batch: int, prefix: str) -> str:
        empty = self.add("EmptyLatentImage", width=64, height=64, batch_size=batch)
        latent = self.sampler(model, noise, positive, negative, [empty, 0], steps=STEPS, cfg=CFG)
        return self.save(vae, [latent, 0], prefix)


def error_of(entry: dict[str, Any]) -> dict[str, Any]:
    assert entry["status"]["status_str"] == "error", entry["status"]
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors, entry["status"]["messages"]
    return errors[0]


def test_object_info_lists_every_node_with_inputs(comfy: ComfyServer) -> None:
    from whichway.comfyui.nodes import NODE_CLASS_MAPPINGS

    expected = {
        "WhichwayPromptPath": {"conditioning_a", "conditioning_b", "frames", "coupling", "seed"},
        "WhichwayNoisePath": {"seed_a", "seed_b", "method", "frames"},
        "WhichwayLatentPath": {"latent_a", "latent_b", "method", "frames"},
        "WhichwaySampler": {
            *("model", "noise", "positive", "negative", "latent_image", "steps", "cfg"),
            *("sampler_name", "scheduler", "denoise"),
        },
        "WhichwayJourney": {
            *("clip", "schedule", "frames", "fps", "coupling", "noise", "seed", "pacing"),
            "audio_feature",
        },
        "WhichwayTokenMatching": {"clip", "prompt_a", "prompt_b", "seed"},
        "WhichwayPathMetrics": {"images", "net", "backbone"},
    }
    assert set(NODE_CLASS_MAPPINGS) == set(expected)
    info = comfy.get("/object_info").body
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} missing from /object_info"
        assert info[name]["category"] == "whichway"
        assert set(info[name]["input"]["required"]) == expected[name]
        assert info[name]["output"] == list(cls.RETURN_TYPES)
    assert "euler" in info["WhichwaySampler"]["input"]["required"]["sampler_name"][0]
    assert "IMPORT FAILED" not in comfy.log_text()


def test_morph_endpoints_equal_plain_renders(comfy: ComfyServer) -> None:
    """Frame t = 0 of an OT morph with shared noise is ComfyUI's plain render of A (same seed,
    sampler, steps), frame t = 1 that of B; the middle frame is neither."""
    g = Graph()
    model, clip, vae = g.base()
    negative = g.encode(clip, "")
    plain_a = g.plain(model, clip, vae, negative, "a red cube on a table", SEED, "plain_a")
    plain_b = g.plain(model, clip, vae, negative, "a blue sphere in the sky", SEED, "plain_b")
    path = g.add(
        "WhichwayPromptPath",
        conditioning_a=g.encode(clip, "a red cube on a table"),
        conditioning_b=g.encode(clip, "a blue sphere in the sky"),
        frames=3,
        coupling="ot",
        seed=0,
    )
    noise = g.add("WhichwayNoisePath", seed_a=SEED, seed_b=SEED + 1, method="fixed", frames=3)
    morph = g.path_sampler(model, vae, [path, 0], negative, [noise, 0], 3, "morph")
    decoded = g.nodes[morph]["inputs"]["images"]
    scores = g.add(
        "WhichwayPathMetrics", images=decoded, net="alex", backbone="random (not comparable)"
    )
    metrics = g.add("PreviewAny", source=[scores, 0])
    entry = comfy.run(g.nodes)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (a,), (b,) = comfy.images(entry, plain_a), comfy.images(entry, plain_b)
    frames = comfy.images(entry, morph)
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    text = "".join(entry["outputs"][metrics]["text"])
    assert text.startswith("LPIPS-alex (RANDOM backbone: not comparable): PPL ")
    assert float(text.split("PPL ")[1].split(",")[0]) > 0
    assert np.abs(a.astype(int) - b.astype(int)).max() > 10  # the two prompts differ visibly
    assert np.abs(frames[0].astype(int) - a.astype(int)).max() <= 1
    assert np.abs(frames[2].astype(int) - b.astype(int)).max() <= 1
    assert np.abs(frames[1].astype(int) - a.astype(int)).max() > 1


def test_noise_path_drives_sampler_custom_advanced(comfy: ComfyServer) -> None:
    """The NOISE output in ComfyUI's own SamplerCustomAdvanced: a COG noise path between two
    seeds gives, at its ends, the plain KSampler renders with those seeds."""
    g = Graph()
    model, clip, vae = g.base()
    negative = g.encode(clip, "")
    text = "a red cube on a table"
    plain_a = g.plain(model, clip, vae, negative, text, SEED, "sca_a")
    plain_b = g.plain(model, clip, vae, negative, text, SEED + 1, "sca_b")
    noise = g.add("WhichwayNoisePath", seed_a=SEED, seed_b=SEED + 1, method="cog", frames=3)
    guider = g.add(
        "CFGGuider", model=model, positive=g.encode(clip, text), negative=negative, cfg=CFG
    )
    sampler = g.add("KSamplerSelect", sampler_name="euler")
    sigmas = g.add("BasicScheduler", model=model, scheduler="normal", steps=STEPS, denoise=1.0)
    empty = g.add("EmptyLatentImage", width=64, height=64, batch_size=3)
    latent = g.add(
        "SamplerCustomAdvanced",
        noise=[noise, 0],
        guider=[guider, 0],
        sampler=[sampler, 0],
        sigmas=[sigmas, 0],
        latent_image=[empty, 0],
    )
    frames_node = g.save(vae, [latent, 0], "sca")
    entry = comfy.run(g.nodes)
    assert entry["status"]["status_str"] == "success", entry["status"]
    frames = comfy.images(entry, frames_node)
    (a,), (b,) = comfy.images(entry, plain_a), comfy.images(entry, plain_b)
    assert np.abs(frames[0].astype(int) - a.astype(int)).max() <= 1
    assert np.abs(frames[2].astype(int) - b.astype(int)).max() <= 1
    assert np.abs(a.astype(int) - b.astype(int)).max() > 10


def test_token_matching_image(comfy: ComfyServer) -> None:
    """The matching plot comes back as an IMAGE through SaveImage; it has ink on it (lines and
    token names), and the report gives the three couplings' costs with OT the cheapest."""
    g = Graph()
    _, clip, _ = g.base()
    matching = g.add(
        "WhichwayTokenMatching",
        clip=clip,
        prompt_a="a red cube on a table",
        prompt_b="a blue sphere in the sky",
        seed=0,
    )
    saver = g.add("SaveImage", images=[matching, 0], filename_prefix="matching")
    report = g.add("PreviewAny", source=[matching, 1])
    entry = comfy.run(g.nodes)
    assert entry["status"]["status_str"] == "success", entry["status"]
    text = "".join(entry["outputs"][report]["text"])
    costs = dict(part.split() for part in text.split("costs ", 1)[1].split(", "))
    assert set(costs) == {"ot", "clip", "random"}
    assert float(costs["ot"]) <= float(costs["clip"]) and float(costs["ot"]) <= float(
        costs["random"]
    )
    (image,) = comfy.images(entry, saver)
    assert image.shape[1] == 750 and image.shape[0] > 300
    assert (image < 128).mean() > 0.005  # text and lines drawn on the white figure
    refused = comfy.queue(
        {**g.nodes, "2": {**g.nodes["2"], "inputs": {**g.nodes["2"]["inputs"], "prompt_a": " "}}}
    )
    assert refused.status == 400 and "prompt_a is empty" in str(refused.body["node_errors"])


def test_journey_keyframes_equal_plain_renders(comfy: ComfyServer) -> None:
    """A TOML journey with a seed per keyframe (COG noise between them): its keyframe frames are
    the plain renders of their prompts with their seeds."""
    schedule = "\n".join(
        [
            "[[keyframe]]",
            'prompt = "a red cube"',
            "seed = 3",
            "frame = 0",
            "[[keyframe]]",
            'prompt = "a green tree"',
            "seed = 4",
            "frame = 2",
            "[[keyframe]]",
            'prompt = "a blue car"',
            "seed = 5",
            "frame = 4",
        ]
    )
    g = Graph()
    model, clip, vae = g.base()
    negative = g.encode(clip, "")
    plains = [
        g.plain(model, clip, vae, negative, text, seed, f"key{seed}")
        for text, seed in (("a red cube", 3), ("a green tree", 4), ("a blue car", 5))
    ]
    journey = g.add(
        "WhichwayJourney",
        clip=clip,
        schedule=schedule,
        frames=5,
        fps=24.0,
        coupling="ot",
        noise="cog",
        seed=0,
        pacing="uniform",
        audio_feature="onset",
    )
    frames_node = g.path_sampler(model, vae, [journey, 0], negative, [journey, 1], 5, "journey")
    entry = comfy.run(g.nodes)
    assert entry["status"]["status_str"] == "success", entry["status"]
    frames = comfy.images(entry, frames_node)
    assert len(frames) == 5
    for k, node in zip((0, 2, 4), plains):
        (plain,) = comfy.images(entry, node)
        assert np.abs(frames[k].astype(int) - plain.astype(int)).max() <= 1, k


def _journey_graph(schedule: str, frames: int = 5) -> dict[str, Any]:
    g = Graph()
    model, clip, vae = g.base()
    journey = g.add(
        "WhichwayJourney",
        clip=clip,
        schedule=schedule,
        frames=frames,
        fps=24.0,
        coupling="ot",
        noise="fixed",
        seed=0,
        pacing="uniform",
        audio_feature="onset",
    )
    negative = g.encode(clip, "")
    g.path_sampler(model, vae, [journey, 0], negative, [journey, 1], frames, "bad")
    return g.nodes


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "schedule is empty"),
        ('"4": "a cat", "0": "a dog"', "must increase"),
        ('"0": "a cat"', "at least 2 keyframes"),
        ('"0": "a cat", "8": "a dog"', "raise frames to 9"),
        (
            "[[keyframe]]\nprompt = 'a cat'\nseed = 1\n[[keyframe]]\nprompt = 'a dog'\nseed = 2",
            "set noise to cog",
        ),
    ],
)
def test_bad_schedule_is_a_validation_error(
    comfy: ComfyServer, schedule: str, message: str
) -> None:
    refused = comfy.queue(_journey_graph(schedule))
    assert refused.status == 400, refused.body
    errors = refused.body["node_errors"]
    node = next(
        k for k, v in errors.items() if v["errors"][0]["type"] == "custom_validation_failed"
    )
    assert errors[node]["class_type"] == "WhichwayJourney"
    assert any(message in e["details"] for e in errors[node]["errors"]), errors
    # the server goes on serving: the next, valid graph runs to its 5 frames (ComfyUI's cache
    # makes the repeats of this same graph cheap)
    entry = comfy.run(_journey_graph('"0": "a cat", "4": "a dog"'))
    assert entry["status"]["status_str"] == "success", entry["status"]
    saver = next(k for k, v in entry["outputs"].items() if "images" in v)
    assert len(comfy.images(entry, saver)) == 5


def test_bad_t_values_are_a_validation_error(comfy: ComfyServer) -> None:
    g = Graph()
    model, clip, vae = g.base()
    path = g.add(
        "WhichwayPromptPath",
        conditioning_a=g.encode(clip, "a"),
        conditioning_b=g.encode(clip, "b"),
        frames=3,
        coupling="ot",
        seed=0,
        t_values="0, 1.5",
    )
    noise = g.add("WhichwayNoisePath", seed_a=0, seed_b=0, method="fixed", frames=3)
    g.path_sampler(model, vae, [path, 0], g.encode(clip, ""), [noise, 0], 3, "bad_t")
    refused = comfy.queue(g.nodes)
    assert refused.status == 400
    assert "[0, 1]" in str(refused.body["node_errors"])


def test_bad_metric_t_values_are_a_validation_error(comfy: ComfyServer) -> None:
    """The path-metrics node's t values are checked when the graph is queued (HTTP 400 naming
    the node), not after the frames were rendered."""
    g = Graph()
    frames = g.add("EmptyImage", width=32, height=32, batch_size=3, color=0)
    metrics = g.add(
        "WhichwayPathMetrics",
        images=[frames, 0],
        net="alex",
        backbone="random (not comparable)",
        t_values="0, x, 1",
    )
    g.add("PreviewAny", source=[metrics, 0])
    refused = comfy.queue(g.nodes)
    assert refused.status == 400, refused.body
    errors = refused.body["node_errors"]
    assert errors[metrics]["class_type"] == "WhichwayPathMetrics"
    assert "numbers separated by commas" in str(errors[metrics]["errors"])


def test_mismatched_batches_are_a_one_line_error(comfy: ComfyServer) -> None:
    """A 3-frame conditioning on a 2-frame latent: an execution error naming the node and the
    batch size to set, not KSampler's silent cut; the next graph runs."""
    g = Graph()
    model, clip, vae = g.base()
    negative = g.encode(clip, "")
    path = g.add(
        "WhichwayPromptPath",
        conditioning_a=g.encode(clip, "a red cube"),
        conditioning_b=g.encode(clip, "a blue sphere"),
        frames=3,
        coupling="ot",
        seed=0,
    )
    noise = g.add("WhichwayNoisePath", seed_a=SEED, seed_b=SEED, method="fixed", frames=2)
    g.path_sampler(model, vae, [path, 0], negative, [noise, 0], 2, "mismatch")
    error = error_of(comfy.run(g.nodes))
    assert error["node_type"] == "WhichwaySampler"
    message = error["exception_message"]
    assert "\n" not in message.strip()
    assert "3 frames" in message and "batch_size to 3" in message


def test_combined_conditioning_is_a_one_line_error(comfy: ComfyServer) -> None:
    """A conditioning that is not one CLIPTextEncode output (two combined entries) is refused
    with what to connect; then the server still renders."""
    g = Graph()
    model, clip, vae = g.base()
    combined = g.add(
        "ConditioningCombine",
        conditioning_1=g.encode(clip, "a"),
        conditioning_2=g.encode(clip, "b"),
    )
    path = g.add(
        "WhichwayPromptPath",
        conditioning_a=[combined, 0],
        conditioning_b=g.encode(clip, "c"),
        frames=3,
        coupling="ot",
        seed=0,
    )
    noise = g.add("WhichwayNoisePath", seed_a=0, seed_b=0, method="fixed", frames=3)
    g.path_sampler(model, vae, [path, 0], g.encode(clip, ""), [noise, 0], 3, "x")
    error = error_of(comfy.run(g.nodes))
    assert error["node_type"] == "WhichwayPromptPath"
    assert "2 conditioning entries" in error["exception_message"]
    assert "\n" not in error["exception_message"].strip()
    g2 = Graph()
    model, clip, vae = g2.base()
    node = g2.plain(model, clip, vae, g2.encode(clip, ""), "a cat", 0, "after_error")
    entry = comfy.run(g2.nodes)
    assert entry["status"]["status_str"] == "success"
    assert len(comfy.images(entry, node)) == 1


def test_unknown_conditioning_shape_is_a_one_line_error(comfy: ComfyServer) -> None:
    """A CONDITIONING of a shape no family has ((1, 77, 512), pooled (1, 512)) is an execution
    error on the prompt-path node listing the shapes it knows, not a guess or a traceback."""
    g = Graph()
    model, clip, vae = g.base()
    odd = g.add("TestOddConditioning", width=512)
    path = g.add(
        "WhichwayPromptPath",
        conditioning_a=[odd, 0],
        conditioning_b=[odd, 0],
        frames=3,
        coupling="ot",
        seed=0,
    )
    noise = g.add("WhichwayNoisePath", seed_a=0, seed_b=0, method="fixed", frames=3)
    g.path_sampler(model, vae, [path, 0], g.encode(clip, ""), [noise, 0], 3, "odd")
    error = error_of(comfy.run(g.nodes))
    assert error["node_type"] == "WhichwayPromptPath"
    message = error["exception_message"].strip()
    assert "\n" not in message
    assert "shape (1, 77, 512) with pooled_output (1, 512) is not one whichway knows" in message
    assert "SD 1.x: (1, n, 768) with pooled (1, 768)" in message


MIDDLE_SCRIPT = """
import sys, torch
comfy_dir, ckpt, out = sys.argv[1:4]
sys.path.insert(0, comfy_dir)
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import comfy.sd
import nodes
from whichway.comfyui.nodes import PromptPath
_, clip, _ = comfy.sd.load_checkpoint_guess_config(ckpt)[:3]
a = nodes.CLIPTextEncode().encode(clip, "a red cube on a table")[0]
b = nodes.CLIPTextEncode().encode(clip, "a blue sphere in the sky")[0]
path, report = PromptPath().run(a, b, 5, "ot", 0)
shuffled, _ = PromptPath().run(a, b, 5, "random", 3)
torch.save({"a": a, "b": b, "path": path, "random": shuffled, "report": report}, out)
"""


def test_middle_conditioning_is_interpolate_clouds_of_comfyuis_tensors(
    comfy: ComfyServer, tmp_path: Path
) -> None:
    """ComfyUI's own CLIPTextEncode output through the prompt-path node: every frame equals
    whichway.interpolate_clouds of the same tensors (OT coupling; and the random coupling of the
    same seed, which surely leaves row order), pooled the linear path."""
    import torch

    from whichway.clouds import couple, interpolate_clouds

    ckpt = comfy.log.parent / "models" / "checkpoints" / CKPT
    out = tmp_path / "path.pt"
    run = subprocess.run(
        [sys.executable, "-c", MIDDLE_SCRIPT, COMFYUI_DIR, str(ckpt), str(out)],
        capture_output=True,
        text=True,
        cwd=COMFYUI_DIR,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    saved = torch.load(out, weights_only=False)
    (ta, ia), (tb, ib) = saved["a"][0], saved["b"][0]
    assert ta.shape == (1, 77, 768) and ia["pooled_output"].shape == (1, 768)
    tensor, info = saved["path"][0]
    times = torch.linspace(0, 1, 5, dtype=torch.float64)
    coupling = couple(ta[0].float(), tb[0].float(), "ot")
    expected = interpolate_clouds(ta[0].float(), tb[0].float(), times, coupling=coupling)
    assert torch.equal(tensor, expected.to(ta.dtype))
    assert torch.equal(tensor[0], ta[0])
    shuffled = couple(
        ta[0].float(), tb[0].float(), "random", generator=torch.Generator().manual_seed(3)
    )
    assert int((shuffled.perm != torch.arange(77)).sum()) > 0
    expected = interpolate_clouds(ta[0].float(), tb[0].float(), times, coupling=shuffled)
    assert torch.equal(saved["random"][0][0], expected.to(ta.dtype))
    pa, pb = ia["pooled_output"][0], ib["pooled_output"][0]
    for k, t in enumerate(times.tolist()):
        assert torch.allclose(info["pooled_output"][k], (1 - t) * pa + t * pb, atol=1e-6)
    assert saved["report"].startswith("SD 1.x: 1 token group\nCLIP-L: 77 tokens, coupling ot")


def _small(api: dict[str, Any]) -> dict[str, Any]:
    """An example graph at test size: the tiny checkpoint, 64 x 64, 2 steps."""
    for node in api.values():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = CKPT
        if node["class_type"] == "EmptyLatentImage":
            inputs.update(width=64, height=64)
        if node["class_type"] == "WhichwaySampler":
            inputs["steps"] = STEPS
    return api


@pytest.mark.parametrize("name", ["whichway_ot_morph", "whichway_journey_mp4"])
def test_example_workflows_run(comfy: ComfyServer, name: str) -> None:
    """The shipped workflow files, read back into API graphs with the server's /object_info,
    run to completion: 9 PNG frames for the morph, an H.264 MP4 of 49 frames for the journey."""
    import json

    import av

    from whichway.comfyui.install import pack_dir

    info = comfy.get("/object_info").body
    workflow = json.loads((pack_dir() / "example_workflows" / f"{name}.json").read_text())
    api = workflows.to_api(workflow, info)
    expected = {
        k: {"class_type": v["class_type"], "inputs": v["inputs"]}
        for k, v in workflows.EXAMPLES[name]().items()
    }
    assert api == expected  # the file is the graph the generator describes
    entry = comfy.run(_small(api))
    assert entry["status"]["status_str"] == "success", entry["status"]
    saver = next(k for k, v in api.items() if v["class_type"] in ("SaveImage", "SaveVideo"))
    files = entry["outputs"][saver]["images"]
    if name == "whichway_ot_morph":
        assert len(comfy.images(entry, saver)) == 9
        return
    (video,) = files
    assert video["filename"].endswith(".mp4")
    path = comfy.log.parent / "output" / video["subfolder"] / video["filename"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 49


def test_journey_paced_by_comfyuis_audio(comfy: ComfyServer) -> None:
    """LoadAudio -> the journey's audio input with pacing 'audio': the frame table's t are the
    plan of whichway travel's audio pacing on the same samples (a click at 0.5 s: the path
    moves fastest there), not uniform steps."""
    import wave

    from whichway.comfyui.journey import audio_envelope, parse_schedule, plan_journey

    rate = 22050
    samples = np.zeros(rate, dtype=np.int16)
    samples[rate // 2 : rate // 2 + 300] = 20000
    with wave.open(str(comfy.log.parent / "input" / "click.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    schedule = '"0": "a red cube on a table", "24": "a blue sphere in the sky"'
    g = Graph()
    _, clip, _ = g.base()
    track = g.add("LoadAudio", audio="click.wav")
    trip = g.add(
        "WhichwayJourney",
        clip=clip,
        schedule=schedule,
        frames=25,
        fps=24.0,
        coupling="ot",
        noise="fixed",
        seed=0,
        pacing="audio",
        audio_feature="onset",
        audio=[track, 0],
    )
    table = g.add("PreviewAny", source=[trip, 2])
    entry = comfy.run(g.nodes)
    assert entry["status"]["status_str"] == "success", entry["status"]
    rows = "".join(entry["outputs"][table]["text"]).splitlines()[1:]
    t = [float(r.split(", ")[2]) for r in rows]
    import torch

    wave_tensor = torch.from_numpy(samples.astype(np.float32) / 32768.0).reshape(1, 1, -1)
    env = audio_envelope({"waveform": wave_tensor, "sample_rate": rate}, "onset")
    plan = plan_journey(parse_schedule(schedule, 24.0), 25, fps=24.0, pacing="audio", audio=env)
    assert t == pytest.approx(plan.t, abs=1e-4)
    steps = np.diff(t)
    assert t[0] == 0.0 and t[-1] == 1.0
    assert abs(int(np.argmax(steps)) - 12) <= 1 and steps.max() > 2 / 24
