"""The token-order invariance check: it must say "invariant" for cross-attention UNets (tiny SD
1.x and SDXL, recorded here) and must flag a denoiser that does see token order (a UNet wrapped to
add a sinusoidal positional encoding to its text tokens, as a transformer without one would not).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from whichway.cli import main
from whichway.models import Conditioning, InvarianceReport, check_invariance
from whichway.models.invariance import TOLERANCES, permute_tokens

SIZE = 16


def sinusoidal(n: int, d: int) -> torch.Tensor:
    """Transformer positional encoding (Vaswani et al. 2017): PE[p, 2i] = sin(p / 10000^(2i/d)),
    PE[p, 2i+1] = cos(p / 10000^(2i/d)); (n, d)."""
    position = torch.arange(n, dtype=torch.float64)[:, None]
    frequency = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.zeros(n, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * frequency)
    pe[:, 1::2] = torch.cos(position * frequency)[:, : d // 2]
    return pe


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_cross_attention_unets_are_invariant(tiny_adapter, family):
    """Recorded on the tiny models (float32): max_rel ≈ 7e-7, i.e. rounding noise, while the text
    itself moves the output by ≈ 0.1 of its scale."""
    report = check_invariance(tiny_adapter(family), height=SIZE, width=SIZE)
    assert isinstance(report, InvarianceReport)
    assert report.family == family and report.dtype == "float32" and report.n_tokens == (77,)
    assert report.size == (SIZE, SIZE) and report.seed == 0
    assert report.invariant and report.informative
    assert report.max_rel < 1e-5 and report.tolerance == TOLERANCES[torch.float32]
    assert report.text_effect > 1e-2
    assert json.loads(json.dumps(report.to_dict()))["invariant"] is True
    assert "INVARIANT" in report.summary()


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_flags_a_denoiser_that_sees_token_order(tiny_adapter, family, monkeypatch):
    adapter = tiny_adapter(family)
    unet = adapter.pipe.unet
    forward = unet.forward

    def positional_forward(*args, encoder_hidden_states, **kwargs):
        n, d = encoder_hidden_states.shape[-2:]
        encoded = encoder_hidden_states + sinusoidal(n, d).to(encoder_hidden_states)
        return forward(*args, encoder_hidden_states=encoded, **kwargs)

    monkeypatch.setattr(unet, "forward", positional_forward)
    report = check_invariance(adapter, height=SIZE, width=SIZE)
    assert not report.invariant
    assert report.max_rel > 100 * report.tolerance
    assert "SENSITIVE" in report.summary()


def test_permutation_moves_rows_and_keeps_pooled():
    g = torch.Generator().manual_seed(0)
    cond = Conditioning(
        (torch.randn(2, 9, 4, generator=g), torch.randn(2, 5, 3, generator=g)),
        torch.randn(2, 6, generator=g),
    )
    permuted, perms = permute_tokens(cond, torch.Generator().manual_seed(1))
    for cloud, new, perm in zip(cond.clouds, permuted.clouds, perms, strict=True):
        assert not torch.equal(perm, torch.arange(len(perm)))
        assert torch.equal(new, cloud[:, perm])
        assert torch.equal(new[:, perm.argsort()], cloud)  # same set of rows
    assert permuted.pooled is cond.pooled
    # the identity draw of a 2-row group is replaced by the swap
    _, perms = permute_tokens(
        Conditioning((torch.zeros(1, 2, 1),)), torch.Generator().manual_seed(0)
    )
    assert perms[0].tolist() == [1, 0]


def test_same_seed_same_report_and_bad_inputs(tiny_adapter):
    adapter = tiny_adapter("sd")
    first = check_invariance(adapter, height=SIZE, width=SIZE, seed=3, timestep=250)
    second = check_invariance(adapter, height=SIZE, width=SIZE, seed=3, timestep=250)
    assert first == second and first.timestep == 250.0
    with pytest.raises(ValueError, match="tolerance must be positive"):
        check_invariance(adapter, height=SIZE, width=SIZE, tolerance=0.0)
    with pytest.raises(ValueError, match="adapter must be a whichway Adapter"):
        check_invariance(adapter.pipe)


def test_cli_check_invariance(tiny_pipeline, capsys):
    path = str(tiny_pipeline("sdxl"))
    assert (
        main(
            [
                "check-invariance",
                "--model",
                path,
                "--device",
                "cpu",
                "--height",
                "16",
                "--width",
                "16",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "sdxl" and report["invariant"] is True and report["n_tokens"] == [77]
    assert (
        main(
            ["check-invariance", "--model", path, "--height", "16", "--width", "16", "--seed", "2"]
        )
        == 0
    )
    assert "INVARIANT to the order of its text tokens" in capsys.readouterr().out
    assert main(["check-invariance", "--model", "nobody/no-such-model"]) == 2
    assert "could not load model" in capsys.readouterr().err
