"""Adapter for Stable Diffusion 1.x / 2.x / sd-turbo (``StableDiffusionPipeline``).

The prompt's conditioning is the CLIP text encoder's last hidden state, one token cloud of
(77, 768) (SD 1.x) or (77, 1024) (SD 2.x), padding tokens included; there is no pooled vector.
Everything goes through the pipeline's own methods (``encode_prompt``, ``__call__`` with
``prompt_embeds``/``latents``) so that a waypoint at t = 0 renders exactly the plain pipeline's
image for prompt A.

Scheduler policy: rendering uses the pipeline's scheduler as loaded (PNDM for SD 1.5, Euler
ancestral for sd-turbo, ...) until an image is inverted: :meth:`SDAdapter.invert` switches the
pipeline to a ``DDIMScheduler`` with the same noise schedule (``use_scheduler("ddim")``), because
DDIM inversion is exact only for DDIM sampling. ``use_scheduler("default")`` switches back.

Stochastic schedulers (Euler ancestral, DDPM) draw step noise: ``render`` gives every row its
own CPU generator seeded with ``STEP_NOISE_SEED`` so a batch renders as its rows alone. The
plain pipeline instead continues the seed's generator after the initial draw, so frame-equality
with the plain pipeline holds for deterministic schedulers (DDIM, PNDM, Euler, DPM-Solver) and
for one-step sd-turbo (whose single ancestral step adds no noise).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from whichway.models._common import (
    check_guidance,
    check_latents,
    check_prompts,
    check_size,
    check_steps,
    cpu_normal_latent,
    ddim_invert,
    ddim_schedule,
    ddim_scheduler,
    guided,
    is_ddim,
    step_callback,
    step_generators,
    warn_if_truncated,
)
from whichway.models.base import Adapter, Conditioning, StepCallback
from whichway.models.prompting import (
    clip_encoder,
    encode_with_syntax,
    nesting_of,
    text_device,
    token_count,
)
from whichway.prompts.chunks import TokenChunks, encode_chunks, tokenize_chunks, warn_cut
from whichway.prompts.syntax import ParsedPrompt, parse_prompt

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline

logger = logging.getLogger(__name__)

SCHEDULERS = ("default", "ddim", "inversion")


class SDAdapter(Adapter):
    """Stable Diffusion 1.x / 2.x (UNet with cross-attention on one CLIP token cloud).

    Also the base of :class:`whichway.models.sdxl.SDXLAdapter`: subclasses override the
    ``_encode*``/``_pipe_conditioning``/``_unet_kwargs`` hooks for their extra inputs.
    """

    family: ClassVar[str] = "sd"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusionPipeline",)
    inversion: ClassVar[str] = "ddim"
    inversion_sampler: ClassVar[str] = "ddim"
    gpu_dtype: ClassVar[torch.dtype] = torch.float16
    #: fixed-point refinements per DDIM inversion step (0 = plain DDIM inversion; k costs k
    #: extra UNet calls per step and tightens the reconstruction)
    inversion_refine: int = 0

    def __init__(self, pipe: DiffusionPipeline, model_id: str = "") -> None:
        super().__init__(pipe, model_id)
        pipe.set_progress_bar_config(disable=True)
        self._negative_cache: dict[tuple[str | None, str, str], Conditioning] = {}

    # --- sizes -----------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (the pipeline checks 8, the VAE its
        factor)."""
        return math.lcm(8, self.vae_scale_factor)

    @property
    def default_size(self) -> tuple[int, int]:
        size = int(self.pipe.unet.config.sample_size) * self.vae_scale_factor
        return size, size

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        check_size(height, width, self.size_multiple)
        f = self.vae_scale_factor
        return int(self.pipe.unet.config.in_channels), height // f, width // f

    # --- text ------------------------------------------------------------------------------
    @property
    def _tokenizers(self) -> list[tuple[Any, str]]:
        return [(self.pipe.tokenizer, "CLIP text encoder")]

    def _warn_truncated(self, prompts: Sequence[str]) -> None:
        for tokenizer, name in self._tokenizers:
            if tokenizer is not None:
                warn_if_truncated(tokenizer, prompts, tokenizer.model_max_length, name)

    def _fits(self, prompt: str) -> bool:
        """Whether the pipeline's own encoding keeps all of a plain ``prompt`` (or cutting is
        what the user asked for, ``long_prompts="truncate"``)."""
        return self.long_prompts == "truncate" or all(
            token_count(tok, prompt) <= tok.model_max_length
            for tok, _ in self._tokenizers
            if tok is not None
        )

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> one token cloud (B, 77·k, d) through ``pipe.encode_prompt`` (plain prompts)
        or the chunked, weighted encoder (:mod:`whichway.prompts`; k = the most chunks of a
        prompt in the batch, shorter clouds tiled).

        With ``long_prompts="truncate"`` a long prompt is cut at 77 tokens as the pipeline cuts
        it, with :class:`~whichway.models.PromptTruncatedWarning`.
        """
        prompts = check_prompts(prompts)
        if self.long_prompts == "truncate":
            self._warn_truncated(prompts)
        return encode_with_syntax(
            prompts,
            fits=self._fits,
            plain=self._encode,
            parsed=self._encode_parsed,
            nesting=nesting_of(self.weighting),
        )

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, _ = self.pipe.encode_prompt(prompts, self.device, 1, False)
        return Conditioning((embeds.float().cpu(),))

    def _chunks(self, tokenizer: Any, parsed: ParsedPrompt, index: int, name: str) -> TokenChunks:
        window = int(tokenizer.model_max_length)
        chunks = tokenize_chunks(tokenizer, parsed, window, chunked=self.long_prompts == "chunk")
        warn_cut(chunks, index, window, name)
        return chunks

    def _encode_parsed(self, parsed: ParsedPrompt, index: int) -> Conditioning:
        """One prompt with syntax or longer than the window: chunks of 77 tokens through the CLIP
        text encoder's last hidden state (as ``encode_prompt`` calls it), weighted by
        ``self.weighting``, joined: (1, 77·k, d)."""
        encoder = self.pipe.text_encoder
        chunks = self._chunks(self.pipe.tokenizer, parsed, index, "CLIP text encoder")
        cloud, _ = encode_chunks(chunks, clip_encoder(encoder), self.weighting, text_device(self))
        return Conditioning((cloud.to(encoder.dtype).float().cpu().unsqueeze(0),))

    @torch.no_grad()
    def encode_negative(self, negative_prompt: str | None = None, batch: int = 1) -> Conditioning:
        """The unconditional conditioning of the plain pipeline (``""``), or a negative prompt's
        (with syntax or long: as :meth:`encode` encodes it); computed once per negative prompt
        and repeated ``batch`` times."""
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(
                f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}"
            )
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        key = (negative_prompt, self.weighting, self.long_prompts)
        if key not in self._negative_cache:
            if negative_prompt and not (
                parse_prompt(negative_prompt, "negative").plain and self._fits(negative_prompt)
            ):
                self._negative_cache[key] = self.encode([negative_prompt])
            else:
                if negative_prompt:
                    self._warn_truncated([negative_prompt])
                self._negative_cache[key] = self._encode_negative(negative_prompt)
        return self._negative_cache[key].expand(batch)

    def _encode_negative(self, negative_prompt: str | None) -> Conditioning:
        # the pipeline's own unconditional branch (uncond_tokens = [""] without a negative prompt)
        negative = None if negative_prompt is None else [negative_prompt]
        _, embeds = self.pipe.encode_prompt([""], self.device, 1, True, negative)
        return Conditioning((embeds.float().cpu(),))

    # --- latents ---------------------------------------------------------------------------
    def initial_latent(self, seed: int, height: int, width: int) -> Tensor:
        """(C, h, w) float32 CPU: the pipeline's draw for
        ``torch.Generator("cpu").manual_seed(seed)``
        (``randn_tensor`` of shape (1, C, h, w) on the CPU in the pipeline's dtype), before the
        scheduler's ``init_noise_sigma`` scaling."""
        return cpu_normal_latent((1, *self.latent_shape(height, width)), seed, self.dtype)[0]

    # --- schedulers ------------------------------------------------------------------------
    @property
    def scheduler_name(self) -> str:
        return type(self.pipe.scheduler).__name__

    def use_scheduler(self, name: str) -> str:
        """Render with ``"ddim"`` (a DDIMScheduler from the loaded scheduler's config: same
        betas, spacing and prediction type; ``"inversion"`` is the same) or the ``"default"``
        scheduler (the loaded one, or the ``--sampler`` choice).
        Returns the name of the scheduler that was active before."""
        if name not in SCHEDULERS:
            raise ValueError(
                f"unknown scheduler {name!r}; valid choices are: {', '.join(SCHEDULERS)}"
            )
        before = (
            "ddim"
            if is_ddim(self.pipe.scheduler) and not is_ddim(self._default_scheduler)
            else "default"
        )
        if name == "default":
            self.pipe.scheduler = self._default_scheduler
        elif not is_ddim(self.pipe.scheduler):
            self.pipe.scheduler = ddim_scheduler(self._loaded_scheduler.config)
            logger.info(
                "rendering with DDIMScheduler instead of %s so that inverted latents reconstruct",
                type(self._default_scheduler).__name__,
            )
        return before

    # --- conditioning -> pipeline / UNet inputs --------------------------------------------
    def _pipe_conditioning(
        self, cond: Conditioning, negative: Conditioning | None
    ) -> dict[str, Tensor]:
        """Keyword arguments of ``pipe(...)`` carrying the (negative) conditioning."""
        kwargs = {"prompt_embeds": cond.clouds[0]}
        if negative is not None:
            kwargs["negative_prompt_embeds"] = negative.clouds[0]
        return kwargs

    def _unet_kwargs(
        self, cond: Conditioning, height: int, width: int, guidance: float
    ) -> dict[str, Any]:
        """UNet keyword arguments besides the sample and timestep, for a batch ``cond``."""
        kwargs: dict[str, Any] = {"encoder_hidden_states": cond.clouds[0]}
        proj = self.pipe.unet.config.time_cond_proj_dim
        if proj is not None:  # guidance-embedded UNets (LCM distillations)
            w = torch.full((len(cond),), guidance - 1.0)
            kwargs["timestep_cond"] = self.pipe.get_guidance_scale_embedding(
                w, embedding_dim=proj
            ).to(device=self.device, dtype=self.dtype)
        return kwargs

    def _check_cond(self, cond: Conditioning, name: str = "cond") -> None:
        if not isinstance(cond, Conditioning):
            raise ValueError(
                f"{name} must be a Conditioning (from adapter.encode), got {type(cond).__name__}"
            )
        if len(cond.clouds) != 1 or cond.pooled is not None:
            raise ValueError(
                f"{name} must have one token group and no pooled vector for a {self.family} model; "
                f"got {len(cond.clouds)} group(s)"
                f"{' and a pooled vector' if cond.pooled is not None else ''}"
            )

    def _uses_cfg(self, guidance: float) -> bool:
        # the pipeline's rule: guidance_scale > 1 and no guidance embedding
        return guidance > 1.0 and self.pipe.unet.config.time_cond_proj_dim is None

    # --- rendering -------------------------------------------------------------------------
    def _run(
        self,
        cond: Conditioning,
        latents: Tensor,
        steps: int,
        guidance: float,
        height: int,
        width: int,
        negative: Conditioning | None,
        on_step: StepCallback | None,
        output_type: str,
    ) -> Tensor:
        self._check_cond(cond)
        batch = len(cond)
        latents = self._batch_latents(cond, latents, height, width)
        if self._uses_cfg(guidance):
            negative = self.encode_negative(None, 1) if negative is None else negative
            self._check_cond(negative, "negative")
            if len(negative) == 1 and batch > 1:
                negative = negative.expand(batch)
            if len(negative) != batch:
                raise ValueError(
                    f"negative has {len(negative)} rows but cond has {batch}; give B or 1"
                )
            # long prompts: both tiled to a common row count, invisible to cross-attention
            cond, negative = Conditioning.aligned([cond, negative])
            negative = negative.to(self.device, self.dtype)
        else:
            negative = None
        output = self.pipe(
            **self._pipe_conditioning(cond.to(self.device, self.dtype), negative),
            latents=latents,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            generator=step_generators(batch),
            output_type=output_type,
            callback_on_step_end=step_callback(on_step, steps),
        )
        return output.images

    # --- inversion -------------------------------------------------------------------------
    @torch.no_grad()
    def invert_latent(
        self,
        latent: Tensor,
        prompt: str,
        *,
        steps: int,
        guidance: float = 1.0,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """DDIM inversion of clean latents in the UNet's (scaled) latent space.

        latent : (B, C, h, w) or (C, h, w), e.g. ``render_latent`` output or a VAE latent.
        Returns the initial latents, same shape, float32 CPU, unscaled N(0, I) convention.
        Runs ``steps`` deterministic DDIM steps backwards
        (:func:`whichway.models._common.ddim_invert`, with ``self.inversion_refine`` fixed-point
        refinements per step) conditioned on ``prompt`` with classifier-free guidance
        ``guidance`` (1.0 = none, the usual choice; Mokady et al. 2023), on the DDIM timesteps
        the renderer will visit, and switches the pipeline to DDIM so that rendering retraces
        the path.
        """
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        steps = check_steps(steps)
        guidance = check_guidance(guidance)
        if not isinstance(latent, Tensor) or latent.ndim not in (3, 4):
            raise ValueError("latent must be a torch.Tensor (B, C, h, w) or (C, h, w)")
        single = latent.ndim == 3
        latent = latent.unsqueeze(0) if single else latent
        f = self.vae_scale_factor
        height, width = int(latent.shape[-2]) * f, int(latent.shape[-1]) * f
        check_latents(latent, self.latent_shape(height, width))
        batch = latent.shape[0]
        self.use_scheduler("ddim")
        scheduler = ddim_scheduler(self._loaded_scheduler.config)
        schedule = ddim_schedule(scheduler, steps)

        cond = self.encode([prompt]).expand(batch)
        cfg = self._uses_cfg(guidance)
        if cfg:
            cond = Conditioning.cat(Conditioning.aligned([self.encode_negative(None, batch), cond]))
        cond = cond.to(self.device, self.dtype)
        unet_kwargs = self._unet_kwargs(cond, height, width, guidance)
        unet = self.pipe.unet

        def predict(x: Tensor, t: Tensor) -> Tensor:
            x_in = torch.cat([x, x]) if cfg else x
            x_in = scheduler.scale_model_input(x_in, t)
            out = unet(x_in, t.to(self.device), **unet_kwargs, return_dict=False)[0]
            return guided(out, guidance) if cfg else out

        noise = ddim_invert(
            predict,
            latent.to(self.device, self.dtype),
            schedule,
            refine=self.inversion_refine,
            on_step=on_step,
        )
        # unscaled N(0, I) convention: render multiplies by the (DDIM) scheduler's init_noise_sigma
        noise = (noise / float(self.pipe.scheduler.init_noise_sigma)).float().cpu()
        return noise[0] if single else noise

    # --- one denoiser call -----------------------------------------------------------------
    @torch.no_grad()
    def denoise_once(self, cond: Conditioning, latent: Tensor, timestep: float) -> Tensor:
        """One UNet call without guidance: ε̂(latent, timestep | cond); (B, C, h, w) float32 CPU.

        latent : (B, C, h, w) (or (C, h, w)) in the UNet's input space; the spatial size sets the
        image size (h·f, w·f) used for SDXL's size conditioning.
        """
        self._check_cond(cond)
        if latent.ndim == 3:
            latent = latent.unsqueeze(0)
        if latent.ndim != 4 or latent.shape[0] not in (1, len(cond)):
            raise ValueError(
                f"latent must be (B, C, h, w) with B = 1 or {len(cond)}, got {tuple(latent.shape)}"
            )
        if latent.shape[0] == 1 and len(cond) > 1:
            latent = latent.expand(len(cond), -1, -1, -1)
        f = self.vae_scale_factor
        height, width = int(latent.shape[-2]) * f, int(latent.shape[-1]) * f
        cond = cond.to(self.device, self.dtype)
        t = torch.as_tensor(timestep, device=self.device)
        out = self.pipe.unet(
            latent.to(self.device, self.dtype),
            t,
            **self._unet_kwargs(cond, height, width, 1.0),
            return_dict=False,
        )[0]
        return out.float().cpu()
