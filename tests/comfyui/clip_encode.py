"""Encode prompts with ComfyUI's own CLIPTextEncode code path on a diffusers CLIP text encoder.

Run in a subprocess with ComfyUI's folder on ``sys.path`` (it is GPL-3.0 and imports its own
modules by top-level names; nothing of it is copied into whichway):

    python clip_encode.py COMFYUI_DIR PIPELINE_DIR PROMPTS.json OUT.pt

``comfy.sd1_clip.SDTokenizer.tokenize_with_weights`` and ``SDClipModel.encode_token_weights``
(what the CLIPTextEncode node calls for SD 1.x) on the pipeline's ``tokenizer`` and
``text_encoder`` weights; OUT.pt holds one (1, 77·k, d) tensor per prompt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    comfy_dir, pipeline, prompts_file, out = sys.argv[1:5]
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, comfy_dir)
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.sd1_clip
    import torch
    from safetensors.torch import load_file

    encoder_dir = Path(pipeline) / "text_encoder"
    tokenizer = comfy.sd1_clip.SDTokenizer(
        tokenizer_path=str(Path(pipeline) / "tokenizer"), pad_with_end=True
    )
    config = json.loads((encoder_dir / "config.json").read_text())
    special = {
        "start": tokenizer.start_token,
        "end": tokenizer.end_token,
        "pad": tokenizer.pad_token,
    }
    model = comfy.sd1_clip.SDClipModel(
        device="cpu",
        layer="last",
        textmodel_json_config=config,
        dtype=torch.float32,
        special_tokens=special,
        return_projected_pooled=False,
    )
    weights = load_file(str(encoder_dir / "model.safetensors"))
    # transformers 5 saves CLIPTextModel without its "text_model." prefix; ComfyUI keeps it
    weights = {
        k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in weights.items()
    }
    # ComfyUI's CLIP embedding table has CLIP's 49408 rows whatever the config says: a smaller
    # vocabulary gets rows of zeros it never looks up
    key = "text_model.embeddings.token_embedding.weight"
    rows = model.transformer.state_dict()[key].shape[0]
    if weights[key].shape[0] < rows:
        pad = weights[key].new_zeros(rows - weights[key].shape[0], weights[key].shape[1])
        weights[key] = torch.cat([weights[key], pad])
    missing, unexpected = model.load_sd(weights)
    if [k for k in missing if "position_ids" not in k and "text_projection" not in k] or unexpected:
        raise SystemExit(f"weights do not fit ComfyUI's CLIP: {missing} {unexpected}")
    model.eval()
    results = []
    with torch.no_grad():
        for prompt in json.loads(Path(prompts_file).read_text()):
            cond, _ = model.encode_token_weights(tokenizer.tokenize_with_weights(prompt))[:2]
            results.append(cond.float().cpu())
    torch.save(results, out)


if __name__ == "__main__":
    main()
