"""The ComfyUI nodes of whichway (loaded by the pack folder's ``__init__.py``).

Every node checks its fields in ``VALIDATE_INPUTS`` where it can (ComfyUI then refuses the graph
with HTTP 400 and ``node_errors`` before anything runs) and raises a one-line ValueError naming
the fix where the problem is only visible at run time (the batch of a latent, the shape of a
conditioning). ComfyUI's own modules are imported inside the functions that run in its server.
"""

from __future__ import annotations

from typing import Any

from whichway.clouds import COUPLING_METHODS
from whichway.comfyui.noise import NOISE_METHODS, PathNoise, parse_times

CATEGORY = "whichway"
_MAX_FRAMES = 10_000
_SEED = {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}
_FRAMES = {"default": 9, "min": 2, "max": _MAX_FRAMES, "tooltip": "frames from t = 0 to t = 1"}
_TIMES = {
    "default": "",
    "multiline": False,
    "tooltip": "explicit t values, e.g. 0, 0.25, 0.5, 1 (overrides frames when not empty)",
}


def _check_times(frames: Any, t_values: Any) -> bool | str:
    try:
        parse_times(t_values if isinstance(t_values, str) else "", frames if frames else 2)
    except ValueError as exc:
        return str(exc)
    return True


def _batch(name: str, conditioning: Any) -> int:
    """The largest batch among a CONDITIONING's entries (tensor and pooled_output)."""
    sizes = {1}
    for entry in conditioning:
        sizes.add(int(entry[0].shape[0]))
        pooled = entry[1].get("pooled_output")
        if pooled is not None:
            sizes.add(int(pooled.shape[0]))
    return max(sizes)


class PromptPath:
    """Two CONDITIONINGs -> a batch of N conditionings along the OT (or clip / random) path."""

    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Interpolates two prompts' token clouds: E_t[i] = (1 - t) E_A[i] + t E_B[σ(i)], σ the "
        "optimal-transport pairing of tokens (Karris et al. 2025), pooled vectors linearly."
    )
    RETURN_TYPES = ("CONDITIONING", "STRING")
    RETURN_NAMES = ("conditioning", "report")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning_a": ("CONDITIONING", {"tooltip": "prompt A (CLIPTextEncode)"}),
                "conditioning_b": ("CONDITIONING", {"tooltip": "prompt B (CLIPTextEncode)"}),
                "frames": ("INT", _FRAMES),
                "coupling": (list(COUPLING_METHODS), {"default": "ot"}),
                "seed": ("INT", {**_SEED, "tooltip": "seed of the random coupling"}),
            },
            "optional": {"t_values": ("STRING", _TIMES)},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, frames: Any = None, t_values: Any = None) -> bool | str:
        return _check_times(frames, t_values)

    def run(
        self,
        conditioning_a: Any,
        conditioning_b: Any,
        frames: int,
        coupling: str,
        seed: int,
        t_values: str = "",
    ) -> tuple[Any, str]:
        from whichway.comfyui.conditioning import coupling_report, prompt_path

        times = parse_times(t_values, frames)
        path = prompt_path(conditioning_a, conditioning_b, times, coupling=coupling, seed=seed)
        sizes = [b - a for a, b in path.groups.bounds]
        report = coupling_report(path.groups, path.couplings, sizes)
        report += "\nt: " + ", ".join(f"{t:.4g}" for t in times)
        return path.conditioning, report


class NoisePath:
    """A NOISE for a batch of frames: one seed for all, or a COG / slerp / lerp path A -> B."""

    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Initial noise per frame: 'fixed' gives every frame seed A's noise (the paper's setting); "
        "cog / slerp / lerp move from seed A's noise to seed B's. Use it with SamplerCustomAdvanced "
        "or whichway's sampler (KSampler draws different noise for every batch item)."
    )
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "seed_a": ("INT", _SEED),
                "seed_b": ("INT", {**_SEED, "default": 1}),
                "method": (list(NOISE_METHODS), {"default": "fixed"}),
                "frames": ("INT", _FRAMES),
            },
            "optional": {"t_values": ("STRING", _TIMES)},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, frames: Any = None, t_values: Any = None) -> bool | str:
        return _check_times(frames, t_values)

    def run(
        self, seed_a: int, seed_b: int, method: str, frames: int, t_values: str = ""
    ) -> tuple[PathNoise]:
        times = tuple(parse_times(t_values, frames))
        return (PathNoise(seed_a, seed_b, method, times),)


class LatentPath:
    """Two LATENTs (e.g. VAEEncode'd or inverted images) -> a LATENT batch along a path."""

    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Combines two latents per frame: cog z = ((1-t) x_A + t x_B) / sqrt((1-t)^2 + t^2) keeps "
        "Gaussian latents Gaussian (Bodin et al.); slerp and lerp for comparison."
    )
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "latent_a": ("LATENT",),
                "latent_b": ("LATENT",),
                "method": (["cog", "slerp", "lerp"], {"default": "cog"}),
                "frames": ("INT", _FRAMES),
            },
            "optional": {"t_values": ("STRING", _TIMES)},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, frames: Any = None, t_values: Any = None) -> bool | str:
        return _check_times(frames, t_values)

    def run(
        self, latent_a: dict, latent_b: dict, method: str, frames: int, t_values: str = ""
    ) -> tuple[dict]:
        from whichway.render import latent_path

        a, b = latent_a["samples"], latent_b["samples"]
        if a.shape[0] != 1 or b.shape[0] != 1:
            raise ValueError(
                f"latent path needs one latent per side, got batches {a.shape[0]} and {b.shape[0]}; "
                "pick one with LatentFromBatch"
            )
        if a.shape != b.shape:
            raise ValueError(
                f"latents A {tuple(a.shape)} and B {tuple(b.shape)} differ in size; encode both "
                "images at the same width and height"
            )
        times = parse_times(t_values, frames)
        path = latent_path(a[0].float(), b[0].float(), times, method=method)
        return ({"samples": path.to(a.dtype)},)


class Sampler:
    """KSampler with a NOISE per frame that refuses mismatched batches instead of cutting them."""

    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Samples a batch of frames with the noise of a whichway noise path (or journey). A "
        "conditioning batch that differs from the latent batch is an error, not a silent cut."
    )
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        import comfy.samplers

        return {
            "required": {
                "model": ("MODEL",),
                "noise": ("NOISE",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": "euler"}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "normal"}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    def run(
        self,
        model: Any,
        noise: Any,
        positive: Any,
        negative: Any,
        latent_image: dict,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        denoise: float,
    ) -> tuple[dict]:
        import comfy.sample
        import comfy.utils
        import latent_preview

        samples = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        batch = samples.shape[0]
        for name, cond in (("positive", positive), ("negative", negative)):
            got = _batch(name, cond)
            if got not in (1, batch):
                raise ValueError(
                    f"the {name} conditioning has {got} frames but the latent batch {batch}; set "
                    f"EmptyLatentImage's batch_size to {got} (ComfyUI's KSampler would cut it silently)"
                )
        drawn = noise.generate_noise({**latent_image, "samples": samples})
        result = comfy.sample.sample(
            model,
            drawn,
            steps,
            cfg,
            sampler_name,
            scheduler,
            positive,
            negative,
            samples,
            denoise=denoise,
            noise_mask=latent_image.get("noise_mask"),
            callback=latent_preview.prepare_callback(model, steps),
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
            seed=int(getattr(noise, "seed", 0)),
        )
        out = dict(latent_image)
        out.pop("batch_index", None)
        out["samples"] = result
        return (out,)


class Journey:
    """A keyframe schedule -> per-frame CONDITIONING (OT per segment), NOISE and t."""

    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Travels through keyframes ('0': 'a cat', '48': 'a dog', or whichway's TOML): every "
        "segment is an OT prompt path and a noise path; pacing uniform or by the audio's onsets."
    )
    RETURN_TYPES = ("CONDITIONING", "NOISE", "STRING")
    RETURN_NAMES = ("conditioning", "noise", "frames")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from whichway.audio import AUDIO_FEATURES

        return {
            "required": {
                "clip": ("CLIP",),
                "schedule": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": '"0": "a photo of a cat",\n"24": "a photo of a dog"',
                    },
                ),
                "frames": ("INT", {"default": 25, "min": 2, "max": _MAX_FRAMES}),
                "fps": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0}),
                "coupling": (list(COUPLING_METHODS), {"default": "ot"}),
                "noise": (list(NOISE_METHODS), {"default": "cog"}),
                "seed": ("INT", _SEED),
                "pacing": (["uniform", "audio"], {"default": "uniform"}),
                "audio_feature": (list(AUDIO_FEATURES), {"default": "onset"}),
            },
            "optional": {"audio": ("AUDIO",)},
        }

    @classmethod
    def VALIDATE_INPUTS(
        cls,
        schedule: Any = None,
        frames: Any = None,
        fps: Any = None,
        noise: Any = None,
        seed: Any = None,
    ) -> bool | str:
        from whichway.comfyui.journey import check_fixed_noise, parse_schedule, plan_journey

        if not isinstance(schedule, str) or not isinstance(fps, (int, float)):
            return True  # linked from another node: checked when it runs
        try:
            keyframes = parse_schedule(schedule, float(fps))
            if isinstance(frames, int):
                plan_journey(keyframes, frames, fps=float(fps))
            if isinstance(noise, str) and isinstance(seed, int):
                check_fixed_noise(keyframes, noise, seed)
        except ValueError as exc:
            return str(exc)
        return True

    def run(
        self,
        clip: Any,
        schedule: str,
        frames: int,
        fps: float,
        coupling: str,
        noise: str,
        seed: int,
        pacing: str,
        audio_feature: str,
        audio: Any = None,
    ) -> tuple[Any, PathNoise, str]:
        from whichway.comfyui.journey import (
            audio_envelope,
            journey_frames,
            parse_schedule,
            plan_journey,
        )

        if pacing == "audio" and audio is None:
            raise ValueError("pacing 'audio' needs the audio input: connect a LoadAudio node")
        keyframes = parse_schedule(schedule, fps)
        env = audio_envelope(audio, audio_feature) if pacing == "audio" else None
        journey = plan_journey(keyframes, frames, fps=fps, pacing=pacing, audio=env)
        encoded = [clip.encode_from_tokens_scheduled(clip.tokenize(kf.prompt)) for kf in keyframes]
        conditioning, path_noise, table = journey_frames(
            journey, encoded, coupling=coupling, noise=noise, seed=seed
        )
        return conditioning, path_noise, table


class TokenMatching:
    """Two prompts -> an IMAGE of which token of A the OT coupling sends to which token of B."""

    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Draws the OT pairing of two prompts' tokens (A left, B right; orange lines leave row "
        "order) with the ot / clip / random coupling costs, per token group."
    )
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "report")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip": ("CLIP",),
                "prompt_a": ("STRING", {"multiline": True, "default": "a photo of a cat"}),
                "prompt_b": ("STRING", {"multiline": True, "default": "a photo of a dog"}),
                "seed": ("INT", {**_SEED, "tooltip": "seed of the random coupling's cost"}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, prompt_a: Any = None, prompt_b: Any = None) -> bool | str:
        for name, text in (("prompt_a", prompt_a), ("prompt_b", prompt_b)):
            if isinstance(text, str) and not text.strip():
                return f"{name} is empty; write the prompt whose tokens are matched"
        return True

    def run(self, clip: Any, prompt_a: str, prompt_b: str, seed: int) -> tuple[Any, str]:
        from whichway.comfyui.matching import figure_image, token_matching
        from whichway.matching import matching_figure

        matching = token_matching(clip, prompt_a, prompt_b, seed=seed)
        lines = [
            f"group {g.group}: {g.moved} of {len(g.perm)} tokens leave row order; costs "
            + ", ".join(f"{m} {c:.6g}" for m, c in g.costs.items())
            for g in matching.groups
        ]
        return figure_image(matching_figure(matching)), "\n".join(lines)


class PathMetrics:
    """An IMAGE batch (the frames of a path) -> PPL, smoothness and the per-step LPIPS."""

    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Perceptual path length PPL = Σ_k LPIPS(frame_k, frame_k+1) (Karris et al. 2025) and "
        "smoothness 1 − Gini of the steps. Needs LPIPS's ImageNet backbone weights; 'random' "
        "runs without them (smoke tests only: numbers not comparable)."
    )
    RETURN_TYPES = ("STRING", "FLOAT", "FLOAT")
    RETURN_NAMES = ("report", "ppl", "smoothness")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from whichway.metrics.lpips_path import LPIPS_NETS

        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "the frames of one path, in order"}),
                "net": (list(LPIPS_NETS), {"default": "alex"}),
                "backbone": (["pretrained", "random (not comparable)"], {"default": "pretrained"}),
            },
            "optional": {"t_values": ("STRING", _TIMES)},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, t_values: Any = None) -> bool | str:
        return _check_times(2, t_values)  # their count is checked against the frames at run time

    def run(
        self, images: Any, net: str, backbone: str, t_values: str = ""
    ) -> tuple[str, float, float]:
        from whichway.metrics import WeightsUnavailableError, perceptual_path_length

        frames = images.permute(0, 3, 1, 2).float()
        times = parse_times(t_values, frames.shape[0]) if frames.shape[0] >= 2 else None
        if times is not None and len(times) != frames.shape[0]:
            raise ValueError(
                f"{len(times)} t values for {frames.shape[0]} frames; give one t per frame or none"
            )
        try:
            m = perceptual_path_length(
                frames, times, net=net, pretrained_backbone=backbone == "pretrained"
            )
        except WeightsUnavailableError as exc:
            raise ValueError(
                " ".join(str(exc).split()) + " (or set backbone to random for a smoke test)"
            ) from None
        except ImportError as exc:  # the comfyui extra does not bring LPIPS / torchvision
            raise ValueError(
                f"the path-metrics node needs the metrics extra ({exc.name or exc}) in the Python "
                "running ComfyUI: pip install 'whichway[metrics]'"
            ) from None
        note = "" if backbone == "pretrained" else " (RANDOM backbone: not comparable)"
        report = (
            f"LPIPS-{net}{note}: PPL {m.ppl:.6g}, smoothness {m.smoothness:.4f}, "
            f"mean step {m.consistency:.6g}, max step {m.max_step:.6g} over {m.n_frames} frames\n"
            "steps: " + ", ".join(f"{v:.4g}" for v in m.steps.tolist())
        )
        return report, m.ppl, m.smoothness


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "WhichwayPromptPath": PromptPath,
    "WhichwayNoisePath": NoisePath,
    "WhichwayLatentPath": LatentPath,
    "WhichwaySampler": Sampler,
    "WhichwayJourney": Journey,
    "WhichwayTokenMatching": TokenMatching,
    "WhichwayPathMetrics": PathMetrics,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "WhichwayPromptPath": "Prompt path (OT) · whichway",
    "WhichwayNoisePath": "Noise path (COG) · whichway",
    "WhichwayLatentPath": "Latent path (COG) · whichway",
    "WhichwaySampler": "Path sampler · whichway",
    "WhichwayJourney": "Journey · whichway",
    "WhichwayTokenMatching": "Token matching · whichway",
    "WhichwayPathMetrics": "Path metrics (PPL) · whichway",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
