"""``whichway couple``: compare the ot / clip / random couplings of two prompt point clouds.

The clouds come from an embedding file (``--embeddings``), from a model's text encoder
(``--model`` with two prompts), or are random Gaussian clouds (seeded) of the SD 1.5 size
77 x 768. For each coupling the command prints the coupling cost, the W2 length of the
displacement path sampled at ``--steps`` times, and how many tokens the coupling moves off the
diagonal (pairs row i with a row other than i).

The module's top level imports only the standard library; torch and whichway.clouds are imported
by the handler.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from whichway.cli._options import add_prompt_options

log = logging.getLogger(__name__)

_EMBEDDING_SUFFIXES = (".pt", ".pth", ".safetensors", ".npz")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "couple",
        help="compare ot / clip / random couplings of two prompt point clouds",
        description=(
            "Couple two token point clouds with each method (ot, clip, random) and print the "
            "coupling cost sum_i |x_i - y_sigma(i)|^2, the W2 length of the displacement path and "
            "the number of tokens moved off the diagonal. Clouds come from --embeddings, from "
            "--model with two prompts, or are random (seeded) 77 x 768 clouds."
        ),
    )
    parser.add_argument("prompts", nargs="*", metavar="PROMPT", help="two prompts (with --model)")
    parser.add_argument(
        "--embeddings",
        type=Path,
        metavar="FILE",
        help="a .pt, .safetensors or .npz file holding two (n, d) arrays named 'a' and 'b'",
    )
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="hub id or local pipeline directory whose text encoder embeds the two prompts",
    )
    add_prompt_options(parser)
    parser.add_argument(
        "--random",
        nargs=2,
        type=int,
        metavar=("N", "D"),
        default=None,
        help="size of the random clouds when no file or model is given (default 77 768)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random clouds and coupling"
    )
    parser.add_argument(
        "--steps", type=int, default=11, help="number of path times t in [0, 1] (default 11)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


def _load_embeddings(path: Path) -> tuple[Any, Any]:
    """Read arrays 'a' and 'b' from a .pt / .safetensors / .npz file as float64 tensors (n, d)."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"embedding file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        data = torch.load(path, map_location="cpu", weights_only=True)
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(str(path))
    elif suffix == ".npz":
        import numpy as np

        with np.load(path) as npz:
            data = {key: torch.from_numpy(npz[key]) for key in npz.files}
    else:
        raise ValueError(
            f"unknown embedding file type {suffix!r}; valid choices are: {', '.join(_EMBEDDING_SUFFIXES)}"
        )
    if not isinstance(data, dict) or "a" not in data or "b" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} must hold two arrays named 'a' and 'b' (n, d), found {keys}")
    clouds = []
    for key in ("a", "b"):
        value = torch.as_tensor(data[key])
        if value.ndim == 3 and value.shape[0] == 1:
            value = value[0]
        if value.ndim != 2:
            raise ValueError(
                f"array {key!r} in {path} must be (n, d), got shape {tuple(value.shape)}"
            )
        clouds.append(value.to(torch.float64))  # analysis in float64; files may mix dtypes
    return clouds[0], clouds[1]


def _encode(
    model: str, prompts: list[str], weighting: str, long_prompts: str
) -> list[tuple[str, Any, Any]]:
    """Encode two prompts with a model adapter; one (label, a, b) per token group, the two
    clouds tiled to a common row count (long prompts of different chunk counts), the label
    saying so."""
    try:
        from whichway.models import load_adapter
    except ImportError as exc:
        from whichway.cli import CLIError

        raise CLIError(
            f"--model needs whichway.models and the model extras (pip install 'whichway[models]'): {exc}"
        ) from exc
    from whichway.models.base import Conditioning
    from whichway.models.prompting import set_prompt_options

    adapter = load_adapter(model)
    set_prompt_options(adapter, weighting, long_prompts)
    own = [adapter.encode([p]) for p in prompts]
    cond = Conditioning.cat(Conditioning.aligned(own))
    out = []
    for g, cloud in enumerate(cond.clouds):
        na, nb, n = own[0].rows[g], own[1].rows[g], cloud.shape[1]
        tiled = f"; tiled to {n} rows (lcm)" if (na, nb) != (n, n) else ""
        out.append((f"group {g} (A {na} rows, B {nb} rows{tiled})", cloud[0], cloud[1]))
    return out


def _describe_prompt(name: str, prompt: str) -> str:
    """``A: 'prompt'`` plus its chunks (BREAK) and weighted fragments, when it has any."""
    from whichway.prompts.syntax import parse_prompt

    parsed = parse_prompt(prompt)
    notes = [f"{len(parsed.chunks)} chunks (BREAK)"] if len(parsed.chunks) > 1 else []
    weighted = [
        f"{f.text.strip()!r} ×{f.weight:.3g}" for c in parsed.chunks for f in c if f.weight != 1
    ]
    if weighted:
        notes.append(f"weighted {', '.join(weighted)}")
    return f"{name}: {prompt!r}" + (f" ({'; '.join(notes)})" if notes else "")


def _compare(a: Any, b: Any, *, seed: int, steps: int) -> list[dict[str, Any]]:
    import torch

    from whichway.clouds import COUPLING_METHODS, couple, interpolate_clouds, path_length_w2

    ts = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    equal = a.shape == b.shape
    rows = []
    for method in COUPLING_METHODS:
        if not equal and method != "ot":
            rows.append({"method": method, "cost": None, "w2_path_length": None, "moved": None})
            continue
        generator = torch.Generator("cpu").manual_seed(seed)
        coupling = couple(a, b, method, generator=generator)
        frames = interpolate_clouds(a.to(torch.float64), b.to(torch.float64), ts, coupling=coupling)
        moved = (
            int((coupling.perm != torch.arange(a.shape[0], device=coupling.perm.device)).sum())
            if coupling.perm is not None
            else None
        )
        rows.append(
            {
                "method": method,
                "cost": float(coupling.cost),
                "w2_path_length": float(path_length_w2(frames)),
                "moved": moved,
            }
        )
    return rows


def check_args(args: argparse.Namespace) -> None:
    """Every argument that needs neither torch nor a model: counts, the seed, the clouds' source
    (an embeddings file must exist and have a known suffix)."""
    from whichway.cli import CLIError
    from whichway.cli._options import check_at_least, check_input_file, check_seed

    check_at_least("--steps", args.steps, 2)
    check_seed("--seed", args.seed)
    if args.prompts and len(args.prompts) != 2:
        raise CLIError(f"give exactly two prompts, got {len(args.prompts)}")
    sources = sum(x is not None for x in (args.embeddings, args.model, args.random))
    if sources > 1:
        raise CLIError("give at most one of --embeddings, --model and --random")
    if args.embeddings is not None:
        check_input_file(args.embeddings, "--embeddings")
        if args.embeddings.suffix.lower() not in _EMBEDDING_SUFFIXES:
            raise ValueError(
                f"unknown embedding file type {args.embeddings.suffix!r}; valid choices are: "
                f"{', '.join(_EMBEDDING_SUFFIXES)}"
            )
    if args.model is not None and len(args.prompts) != 2:
        raise CLIError("--model needs two prompts: whichway couple 'prompt A' 'prompt B' --model M")
    if args.random is not None and min(args.random) < 1:
        raise ValueError(
            f"--random N D needs N >= 1 and D >= 1, got {args.random[0]} {args.random[1]}"
        )
    if args.embeddings is None and args.model is None:
        check_clouds_memory(*(args.random or (77, 768)), args.steps, "--random N D")


def check_clouds_memory(n: int, d: int, steps: int, source: str) -> None:
    """Refuse a comparison whose clouds, cost matrix and sampled path cannot fit the memory:
    8 bytes x (2 n d clouds + n^2 costs + steps x n x d path points), float64."""
    from whichway.budget import check_memory

    check_memory(
        f"--steps {steps}",
        8 * (2 * n * d + n * n + steps * n * d),
        f"{source}: two clouds of {n} points in {d} dimensions, their cost matrix and {steps} "
        "path points",
    )


def run(args: argparse.Namespace) -> int:
    check_args(args)

    import torch

    from whichway.clouds import wasserstein2

    if args.embeddings is not None:
        a, b = _load_embeddings(args.embeddings)
        groups = [(str(args.embeddings), a, b)]
        if args.prompts:
            log.warning("prompts are ignored with --embeddings (the clouds come from the file)")
    elif args.model is not None:  # check_args made sure of two prompts
        groups = _encode(args.model, list(args.prompts), args.weighting, args.long_prompts)
    else:
        n, d = args.random if args.random is not None else (77, 768)
        if args.prompts:
            log.warning("no --model given: the prompts are only labels, the clouds are random")
        generator = torch.Generator("cpu").manual_seed(args.seed)
        a = torch.randn(n, d, generator=generator)
        b = torch.randn(n, d, generator=generator)
        groups = [(f"random N(0, I) clouds, seed {args.seed}", a, b)]
    for label, a, b in groups:  # the encoded or loaded clouds, before any path is sampled
        check_clouds_memory(max(len(a), len(b)), a.shape[-1], args.steps, label)

    report = []
    for label, a, b in groups:
        rows = _compare(a, b, seed=args.seed, steps=args.steps)
        report.append(
            {
                "source": label,
                "a_shape": list(a.shape),
                "b_shape": list(b.shape),
                "w2": float(wasserstein2(a, b)),
                "couplings": rows,
            }
        )

    if args.json:
        print(
            json.dumps(
                {"prompts": list(args.prompts), "steps": args.steps, "groups": report}, indent=2
            )
        )
        return 0
    if args.prompts:
        print(_describe_prompt("A", args.prompts[0]))
        print(_describe_prompt("B", args.prompts[1]))
    for item in report:
        n = item["a_shape"][0]
        print(
            f"{item['source']}: a {tuple(item['a_shape'])}, b {tuple(item['b_shape'])}, "
            f"W2 = {item['w2']:.6g}, path sampled at {args.steps} times"
        )
        if item["a_shape"] != item["b_shape"]:
            print(
                "  unequal sizes: general OT (POT ot.emd); the path keeps a's rows and ends at the "
                "barycentric projection of b, so its length can be below W2"
            )
        print(f"  {'coupling':<8} {'cost':>14} {'W2 path length':>15} {'moved':>9}")
        for row in item["couplings"]:
            if row["cost"] is None:
                print(f"  {row['method']:<8} {'n/a (needs equal sizes)':>40}")
                continue
            moved = "-" if row["moved"] is None else f"{row['moved']}/{n}"
            print(
                f"  {row['method']:<8} {row['cost']:>14.6g} {row['w2_path_length']:>15.6g} {moved:>9}"
            )
    return 0
