"""The weighting rule named "comfyui" is ComfyUI's CLIPTextEncode: same prompt, same CLIP weights.

ComfyUI (the vendored 0.3.64, GPL-3.0, run, never copied) encodes in a subprocess with its own
``sys.path`` (``tests/comfyui/clip_encode.py``): ``SDTokenizer.tokenize_with_weights`` and
``SDClipModel.encode_token_weights`` on the tiny SD pipeline's tokenizer and text encoder. Found
through ``COMFYUI_DIR`` (CI unpacks it there) or unpacked from ``../shared/vendor/``; skipped,
with the reason, where neither exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
VENDORED = Path("shared") / "vendor" / "comfyui-a125cd84.tar.gz"


def _vendor() -> Path:
    """``../shared/vendor/`` beside the checkout, or beside the main checkout when this one is a
    git worktree (``git rev-parse --git-common-dir`` is the main checkout's ``.git``)."""
    roots = [HERE.parent]
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        if common:
            roots.append(Path(common).parent)
    except (OSError, subprocess.SubprocessError):
        pass
    candidates = [root.parent / VENDORED for root in roots]
    return next((c for c in candidates if c.is_file()), candidates[0])


VENDOR = _vendor()
LONG = " ".join(["a red car near the big old tree under sky"] * 20)

PROMPTS = [
    "a photo of a (cat:1.5) on a table",
    "a ((red)) dog, (blue sky:0.7), (tree:1.0)",
    r"a \(literal\) bracket and (nested (weights:1.3) here:0.8)",
    "a photo of a cat",  # no weights: ComfyUI encodes no empty chunk
    LONG,  # 200 tokens: 3 chunks of 75
    f"(forest:1.2), {LONG}, (night:0.6)",  # weights across chunk boundaries
]


@pytest.fixture(scope="module")
def comfy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("COMFYUI_DIR")
    if given and (Path(given) / "comfy" / "sd1_clip.py").is_file():
        return Path(given)
    if not VENDOR.is_file():
        pytest.skip(f"no ComfyUI: set COMFYUI_DIR or put the vendored source at {VENDOR}")
    root = tmp_path_factory.mktemp("comfyui")
    with tarfile.open(VENDOR) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("ComfyUI/comfy/")]
        tar.extractall(root, members=members, filter="data")
    return root / "ComfyUI"


def test_comfyui_rule_equals_comfyuis_clip_text_encode(comfy_dir, tiny_pipeline, tmp_path):
    from whichway.models import load_adapter

    pipeline = tiny_pipeline("sd")
    (tmp_path / "prompts.json").write_text(json.dumps(PROMPTS))
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "comfyui" / "clip_encode.py"),
            str(comfy_dir),
            str(pipeline),
            str(tmp_path / "prompts.json"),
            str(tmp_path / "comfy.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode and "ModuleNotFoundError" in done.stderr:
        pytest.skip(f"ComfyUI's CLIP modules need: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = torch.load(tmp_path / "comfy.pt")

    adapter = load_adapter(str(pipeline), device="cpu")
    assert adapter.weighting == "comfyui"
    for prompt, reference in zip(PROMPTS, theirs, strict=True):
        ours = adapter.encode([prompt]).clouds[0]
        assert ours.shape == reference.shape, prompt  # the same chunks: 77·k rows
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5, msg=prompt)
    assert theirs[4].shape[1] == 231 and theirs[5].shape[1] == 231
