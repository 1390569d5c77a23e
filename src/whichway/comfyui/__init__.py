"""whichway as a ComfyUI node pack.

* :mod:`whichway.comfyui.conditioning` — ComfyUI CONDITIONING <-> whichway token groups, and the
  OT / CLIP / random prompt path between two of them (pure tensor math);
* :mod:`whichway.comfyui.noise` — ComfyUI's per-seed noise and the fixed / COG / slerp / lerp
  noise paths, as a NOISE object for ``SamplerCustomAdvanced`` and whichway's own sampler;
* :mod:`whichway.comfyui.journey` — keyframe schedules (FizzNodes / Deforum text, whichway's TOML)
  to per-frame conditionings and noise, paced uniformly or by an AUDIO input;
* :mod:`whichway.comfyui.nodes` — the node classes ComfyUI loads (``NODE_CLASS_MAPPINGS``);
* :mod:`whichway.comfyui.install` — linking the pack folder (``pack/``) into a ComfyUI.

Nothing here imports ComfyUI at module level: the geometry runs (and is tested) without it.
"""
