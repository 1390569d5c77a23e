"""DiffMorpher (Zhang et al., "DiffMorpher: Unleashing the Capability of Diffusion Models for
Image Morphing", CVPR 2024; official code ``Kevin-thu/DiffMorpher``) on today's diffusers.

Four pieces, each the official formula:

* a LoRA per image, fitted with the denoising loss on that image and its prompt
  (:func:`fit_lora`; on ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every UNet attention);
* per-factor LoRA interpolation: a frame at α uses down_α = (1 - α) down_A + α down_B and
  up_α = (1 - α) up_A + α up_B (:func:`lerp_lora`), so W_α x = W x + up_α down_α x. Here every
  row of one denoiser batch has its own α (:class:`InterpolatedLoRA`), which lets the rows
  [A, B, m_1 .. m_k] share one call: down_α x = (1 - α) down_A x + α down_B x, then
  up_α y = (1 - α) up_A y + α up_B y, exactly;
* the up blocks' self-attention of a middle row attends to the mixed hidden states
  (1 - α) h_A + α h_B of the two endpoint rows of the same call (keys and values projected by the
  row's own LoRA'd projections, queries from its own hidden states), for the denoiser calls
  i < λ·steps (:class:`KVMixProcessor`);
* AdaIN of the interpolated initial latent: z = IN(slerp(z_A, z_B; α)) σ_α + μ_α with
  μ_α, σ_α the per-channel mean and std of z_A and z_B mixed linearly (:func:`adain`,
  :func:`adain_slerp`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The linear layers of every attention that get a LoRA (the official LoRAAttnProcessor's)."""

ADAIN_EPS = 1e-5
"""Added to the variance of the endpoint latents (the official ``calc_mean_std``)."""


# --- latents ----------------------------------------------------------------------------------


def _mean_std(z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (unbiased variance + 1e-5) of z (C, h, w) -> (C, 1, 1) each."""
    flat = z.reshape(z.shape[0], -1)
    return (
        flat.mean(1).reshape(-1, 1, 1),
        (flat.var(1) + ADAIN_EPS).sqrt().reshape(-1, 1, 1),
    )


def adain(latents: Tensor, z_a: Tensor, z_b: Tensor, alphas: Tensor) -> Tensor:
    """AdaIN of interpolated latents toward the endpoints' statistics.

    latents (T, C, h, w), z_a and z_b (C, h, w), alphas (T,) ->
    (T, C, h, w): IN(latents_t) · ((1 - α_t) σ_A + α_t σ_B) + (1 - α_t) μ_A + α_t μ_B, with IN
    the instance norm (biased variance, eps 1e-5) and μ, σ per channel. Computed in float64,
    returned in the dtype of ``latents``.
    """
    z = latents.double()
    mean_a, std_a = _mean_std(z_a.double())
    mean_b, std_b = _mean_std(z_b.double())
    a = alphas.double().reshape(-1, 1, 1, 1)
    flat = z.reshape(*z.shape[:2], -1)
    normed = (z - flat.mean(-1)[..., None, None]) / (
        flat.var(-1, unbiased=False)[..., None, None] + ADAIN_EPS
    ).sqrt()
    out = normed * ((1 - a) * std_a + a * std_b) + (1 - a) * mean_a + a * mean_b
    return out.to(latents.dtype)


def slerp_whole(z_a: Tensor, z_b: Tensor, alphas: Tensor) -> Tensor:
    """Spherical interpolation over the whole tensor, as the official ``slerp``:
    z_a, z_b (C, h, w), alphas (T,) -> (T, C, h, w)
    = sin((1 - α)θ)/sin θ · z_a + sin(αθ)/sin θ · z_b with cos θ = <z_a, z_b>/(|z_a||z_b|)
    clamped to [-1 + 1e-7, 1 - 1e-7] (float64)."""
    p, q = z_a.double(), z_b.double()
    cos = ((p * q).sum() / (p.norm() * q.norm())).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.arccos(cos)
    a = alphas.double().reshape(-1, 1, 1, 1)
    out = (torch.sin((1 - a) * theta) * p + torch.sin(a * theta) * q) / torch.sin(theta)
    return out.to(z_a.dtype)


def adain_slerp(z_a: Tensor, z_b: Tensor, alphas: Tensor) -> Tensor:
    """DiffMorpher's initial latents: AdaIN (:func:`adain`) of the slerp (:func:`slerp_whole`).
    z_a, z_b (C, h, w), alphas (T,) -> (T, C, h, w)."""
    return adain(slerp_whole(z_a, z_b, alphas), z_a, z_b, alphas)


# --- LoRA -------------------------------------------------------------------------------------


def lerp_lora(
    lora_a: dict[str, Tensor], lora_b: dict[str, Tensor], alpha: float
) -> dict[str, Tensor]:
    """Per-factor LoRA interpolation (the official ``load_lora``): every tensor of the state
    dict, down and up factors alike, (1 - α) A + α B."""
    if lora_a.keys() != lora_b.keys():
        raise ValueError("the two LoRAs adapt different layers; fit both on the same model")
    return {name: (1 - alpha) * lora_a[name] + alpha * lora_b[name] for name in lora_a}


@dataclass
class RowAlphas:
    """Shared state of the :class:`InterpolatedLoRA` layers of one denoiser: the α of every
    conditional row (R,). A batch of N = m·R rows (m = 2 under guidance: [uncond; cond]) gives
    row n the α of row n mod R."""

    alphas: Tensor

    def for_batch(self, n: int) -> Tensor:
        rows = len(self.alphas)
        if n % rows:
            raise ValueError(f"LoRA interpolation expected a multiple of {rows} rows, got {n}")
        return self.alphas.repeat(n // rows)


class InterpolatedLoRA(nn.Module):
    """A linear layer plus a LoRA interpolated per factor, per row of the batch.

    base : nn.Linear (out, in); downs (2, r, in) and ups (2, out, r): the A and B LoRAs' factors
    (``downs`` None: one trainable LoRA, down ~ N(0, 1/r²) and up = 0 as the official
    ``LoRALinearLayer``, for :func:`fit_lora`).

    forward: x (N, ..., in) -> base(x) + (1 - α) up_A y + α up_B y, y = (1 - α) down_A x + α down_B x
    with α the row's (``rows``); a fitted LoRA (one factor pair) gives base(x) + up(down(x)).
    """

    def __init__(
        self,
        base: nn.Linear,
        rows: RowAlphas | None = None,
        downs: Tensor | None = None,
        ups: Tensor | None = None,
        *,
        rank: int = 16,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.rows = rows
        if downs is None or ups is None:
            down = torch.randn(rank, base.in_features, generator=generator) / rank
            self.down = nn.Parameter(down.to(base.weight))
            self.up = nn.Parameter(torch.zeros(base.out_features, rank).to(base.weight))
            self.register_buffer("downs", None)
            self.register_buffer("ups", None)
        else:
            self.down = self.up = None
            self.register_buffer("downs", downs.to(base.weight))
            self.register_buffer("ups", ups.to(base.weight))

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x)
        if self.down is not None:
            return out + (x @ self.down.T) @ self.up.T
        if self.rows is None:
            raise ValueError("an interpolated LoRA needs the rows' alphas")
        a = self.rows.for_batch(x.shape[0]).to(x).reshape(-1, *[1] * (x.ndim - 1))
        y = (1 - a) * (x @ self.downs[0].T) + a * (x @ self.downs[1].T)
        return out + (1 - a) * (y @ self.ups[0].T) + a * (y @ self.ups[1].T)


def _lora_targets(unet: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Linear]]:
    """(name, parent, attribute, linear) of every LoRA target of the UNet's attention layers."""
    from diffusers.models.attention_processor import Attention

    for name, module in unet.named_modules():
        if not isinstance(module, Attention):
            continue
        for target in LORA_TARGETS:
            parent, attr = module, target
            if "." in target:
                head, attr = target.split(".")
                parent = getattr(module, head)
            linear = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
            if isinstance(linear, InterpolatedLoRA):
                raise ValueError(f"{name}.{target} already has a DiffMorpher LoRA installed")
            yield f"{name}.{target}", parent, attr, linear


def _set(parent: nn.Module, attr: str, module: nn.Module) -> None:
    if attr.isdigit():
        parent[int(attr)] = module
    else:
        setattr(parent, attr, module)


@contextlib.contextmanager
def _swapped(
    unet: nn.Module, make: Callable[[str, nn.Linear], nn.Module]
) -> Iterator[dict[str, nn.Module]]:
    """Replace every LoRA target linear by ``make(name, linear)`` for the block; put back after."""
    swapped = [(name, parent, attr, linear) for name, parent, attr, linear in _lora_targets(unet)]
    made = {}
    try:
        for name, parent, attr, linear in swapped:
            made[name] = make(name, linear)
            _set(parent, attr, made[name])
        yield made
    finally:
        for _, parent, attr, linear in swapped:
            _set(parent, attr, linear)


@contextlib.contextmanager
def interpolated_loras(
    unet: nn.Module, lora_a: dict[str, Tensor], lora_b: dict[str, Tensor], rows: RowAlphas
) -> Iterator[int]:
    """Install the A and B LoRAs (fitted by :func:`fit_lora`, state dicts ``NAME.down`` and
    ``NAME.up``) on the UNet, each row of a batch interpolated per factor at its α in ``rows``;
    yields how many layers were adapted, and restores the plain layers on exit."""

    def make(name: str, linear: nn.Linear) -> nn.Module:
        key = f"{name}.down"
        if key not in lora_a or key not in lora_b:
            raise ValueError(f"the LoRAs have no weights for {name}; fit them on this model")
        downs = torch.stack([lora_a[key], lora_b[key]])
        ups = torch.stack([lora_a[f"{name}.up"], lora_b[f"{name}.up"]])
        return InterpolatedLoRA(linear, rows, downs, ups)

    with _swapped(unet, make) as made:
        yield len(made)


@dataclass(frozen=True)
class LoraFit:
    """A LoRA fitted to one image: ``weights`` (``NAME.down`` (r, in) and ``NAME.up`` (out, r)
    per adapted linear layer, float32 on the CPU) and the training loss of every step."""

    weights: dict[str, Tensor]
    losses: tuple[float, ...]


def fit_lora(
    unet: nn.Module,
    vae: nn.Module,
    scheduler: Any,
    image: Tensor,
    prompt_embeds: Tensor,
    *,
    rank: int = 16,
    steps: int = 200,
    lr: float = 2e-4,
    generator: torch.Generator | None = None,
    added_cond: dict[str, Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> LoraFit:
    """Fit a LoRA to one image as the official ``train_lora``.

    image (1, 3, H, W) in [-1, 1]; prompt_embeds (1, n, d) the image's prompt (no guidance);
    ``added_cond`` SDXL's ``added_cond_kwargs`` (pooled text and time ids). Each step:
    x0 ~ the VAE's posterior · scaling factor, ε ~ N(0, I), t ~ U{0 .. T - 1},
    loss = ‖ε_θ(add_noise(x0, ε, t), t) - target‖² (target ε, or v for v-prediction),
    AdamW (lr, betas (0.9, 0.999), weight decay 1e-2, eps 1e-8), constant learning rate.
    ``on_step(step, loss)`` after every step. The UNet is left as it was.
    """
    import torch.nn.functional as F

    device = next(unet.parameters()).device
    g = generator or torch.Generator().manual_seed(0)
    was_training = unet.training
    grads = [p.requires_grad for p in unet.parameters()]
    unet.requires_grad_(False)
    with torch.no_grad():
        posterior = vae.encode(image.to(device, vae.dtype)).latent_dist
    scaling = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    prediction = scheduler.config.prediction_type
    cond = prompt_embeds.to(device, unet.dtype)
    losses: list[float] = []
    with _swapped(unet, lambda _, linear: InterpolatedLoRA(linear, rank=rank, generator=g)) as made:
        params = [p for m in made.values() for p in (m.down, m.up)]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(
            params, lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8
        )
        unet.train()
        try:
            for step in range(steps):
                noise_x = torch.randn(posterior.mean.shape, generator=g).to(posterior.mean)
                x0 = (posterior.mean + posterior.std * noise_x - shift) * scaling
                noise = torch.randn(x0.shape, generator=g).to(x0)
                t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=g)
                t = t.to(device)
                noisy = scheduler.add_noise(x0, noise, t)
                pred = unet(noisy, t, cond, added_cond_kwargs=added_cond).sample
                if prediction == "epsilon":
                    target = noise
                elif prediction == "v_prediction":
                    target = scheduler.get_velocity(x0, noise, t)
                else:
                    raise ValueError(f"cannot fit a LoRA for prediction type {prediction!r}")
                loss = F.mse_loss(pred.float(), target.float())
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                losses.append(float(loss.detach()))
                if on_step is not None:
                    on_step(step, losses[-1])
        finally:
            unet.train(was_training)
            for p, g_ in zip(unet.parameters(), grads):
                p.requires_grad_(g_)
        weights = {}
        for name, m in made.items():
            weights[f"{name}.down"] = m.down.detach().float().cpu().clone()
            weights[f"{name}.up"] = m.up.detach().float().cpu().clone()
    return LoraFit(weights, tuple(losses))


def lora_loss(
    unet: nn.Module,
    vae: nn.Module,
    scheduler: Any,
    image: Tensor,
    prompt_embeds: Tensor,
    lora: dict[str, Tensor] | None,
    *,
    draws: int = 8,
    seed: int = 123,
) -> float:
    """The mean denoising loss (:func:`fit_lora`'s objective, target ε) of the UNet with
    ``lora`` (None: without) over ``draws`` fixed draws of (x0 noise, ε, t)."""
    device = next(unet.parameters()).device
    g = torch.Generator().manual_seed(seed)
    rows = RowAlphas(torch.zeros(1))
    ctx = (
        interpolated_loras(unet, lora, lora, rows) if lora is not None else contextlib.nullcontext()
    )
    total = 0.0
    with torch.no_grad(), ctx:
        posterior = vae.encode(image.to(device, vae.dtype)).latent_dist
        for _ in range(draws):
            noise_x = torch.randn(posterior.mean.shape, generator=g).to(posterior.mean)
            x0 = (posterior.mean + posterior.std * noise_x) * vae.config.scaling_factor
            noise = torch.randn(x0.shape, generator=g).to(x0)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=g)
            pred = unet(scheduler.add_noise(x0, noise, t), t, prompt_embeds).sample
            total += float(((pred - noise) ** 2).mean())
    return total / draws


# --- self-attention K/V mix -------------------------------------------------------------------


class KVMixProcessor:
    """An up-block self-attention processor: while ``control.active`` (denoiser calls
    i < λ·steps), each middle row m with coefficient α attends with its own queries to the keys
    and values of (1 - α) h_A + α h_B, the hidden states of its endpoint rows in the same call
    (both halves under guidance, as the official code, whose stored states are the whole batch).
    Endpoint rows, later calls and cross-attention go to ``plain`` unchanged.

    ``control``: an :class:`whichway.attention.aid.AIDControl` (rows [ends..., m_1 .. m_k]).
    """

    def __init__(self, control: Any, plain: Any) -> None:
        self.control = control
        self.plain = plain

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        control = self.control
        if encoder_hidden_states is not None or not control.active:
            return self.plain(
                attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs
            )
        rows = control.rows
        if hidden_states.shape[0] % rows:
            raise ValueError(
                f"DiffMorpher expected a multiple of {rows} rows, got {hidden_states.shape[0]}"
            )
        context = hidden_states.clone()
        c = control.coefs.to(hidden_states).reshape(-1, *[1] * (hidden_states.ndim - 1))
        for first in range(0, hidden_states.shape[0], rows):
            a, b = control.endpoints(first)
            mid = slice(first + control.leading, first + rows)
            context[mid] = (1 - c) * hidden_states[a] + c * hidden_states[b]
        return self.plain(attn, hidden_states, context, attention_mask, *args, **kwargs)


def _mixes(name: str, module: Any) -> bool:
    """The official ``do_replace_attn``: self-attention layers of the up blocks."""
    return name.startswith("up_blocks") and not getattr(module, "is_cross_attention", False)


@contextlib.contextmanager
def kv_mixed(unet: nn.Module, control: Any) -> Iterator[int]:
    """Install :class:`KVMixProcessor` on the UNet's up-block self-attention layers and a
    forward pre-hook counting denoiser calls; yields how many layers; restores on exit."""
    from diffusers.models.attention_processor import Attention

    replaced = []
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and _mixes(name, module):
            plain = module.get_processor()
            replaced.append((module, plain))
            module.set_processor(KVMixProcessor(control, plain))
    hook = unet.register_forward_pre_hook(control.advance)
    try:
        yield len(replaced)
    finally:
        hook.remove()
        for module, plain in replaced:
            module.set_processor(plain)


def diffmorpher_hooks(
    lora_a: dict[str, Tensor] | None, lora_b: dict[str, Tensor] | None
) -> Callable[[nn.Module, Any, Tensor], Any]:
    """The hooks :func:`whichway.attention.batch.render_aid_batch` installs for DiffMorpher:
    (unet, control, row alphas (R,)) -> a context with the interpolated LoRAs (when given) and
    the up-block K/V mix."""

    @contextlib.contextmanager
    def install(unet: nn.Module, control: Any, alphas: Tensor) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if lora_a is not None and lora_b is not None:
                stack.enter_context(interpolated_loras(unet, lora_a, lora_b, RowAlphas(alphas)))
            stack.enter_context(kv_mixed(unet, control))
            yield

    return install
