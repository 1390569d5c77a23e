"""``whichway score``: LPIPS path metrics of a morph run (or a folder of frames)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="path metrics of a morph run: PPL, smoothness, consistency, max step",
        description=(
            "Measure the LPIPS distance between consecutive frames of a `whichway morph` run (or of "
            "any folder of same-size frames, sorted by name, taken as uniform in t) and report "
            "PPL = sum_k d_k, the StyleGAN-style sum_k d_k / dt_k^2, smoothness = 1 - Gini(d), "
            'consistency = mean(d) and the largest step. A run\'s run.json gets them under "metrics".'
        ),
        epilog=(
            "LPIPS weights: the linear heads ship with the lpips package; the backbone's ImageNet "
            "weights (alexnet-owt-7be5be79.pth for --net alex, vgg16-397923af.pth for --net vgg) are "
            "downloaded by torchvision on first use into $TORCH_HOME/hub/checkpoints (default "
            "~/.cache/torch/hub/checkpoints). Offline, download the file on a connected machine from "
            "https://download.pytorch.org/models/<file> and copy it there; once it is cached, `whichway "
            "morph` prints its PPL summary again. --random-backbone runs without them (smoke tests "
            "only: values not comparable)."
        ),
    )
    p.add_argument(
        "path",
        metavar="FRAMES_DIR_OR_RUN",
        help="run directory (with run.json) or folder of frames",
    )
    p.add_argument(
        "--net", default="alex", choices=("alex", "vgg"), help="LPIPS backbone (default alex)"
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="frames per backbone pass (default 8)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument(
        "--random-backbone",
        action="store_true",
        help="randomly initialised LPIPS backbone (offline smoke runs; values not comparable with published LPIPS)",
    )
    p.add_argument("--no-write", action="store_true", help="do not update run.json")
    p.set_defaults(func=run)


def _table(metrics: dict) -> str:
    rows = [
        ("frames", f"{metrics['n_frames']}"),
        ("PPL  sum d_k", f"{metrics['ppl']:.4g}"),
        ("PPL  sum d_k/dt_k^2", f"{metrics['ppl_normalized']:.4g}"),
        ("smoothness  1-Gini(d)", f"{metrics['smoothness']:.4g}"),
        ("consistency  mean d", f"{metrics['consistency']:.4g}"),
        ("max step", f"{metrics['max_step']:.4g}"),
    ]
    for c in metrics.get("couplings", []):
        if isinstance(c, dict) and "cost" in c:
            rows.append(
                (
                    f"coupling cost (group {c.get('group', 0)}, {c.get('method', '?')})",
                    f"{c['cost']:.4g}",
                )
            )
            if c.get("w2_path_length") is not None:
                rows.append(
                    (f"W2 path length (group {c.get('group', 0)})", f"{c['w2_path_length']:.4g}")
                )
    lp = metrics["lpips"]
    backbone = "pretrained" if lp["pretrained_backbone"] else "RANDOM (not comparable)"
    width = max(len(k) for k, _ in rows)
    lines = [f"LPIPS {lp['net']} v{lp['version']}, backbone {backbone}"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    steps = ", ".join(f"{d:.3g}" for d in metrics["steps"])
    lines.append(f"  {'steps':<{width}}  {steps}")
    return "\n".join(lines)


def check_args(args: argparse.Namespace) -> None:
    """Everything score can check before the LPIPS weights are loaded: the batch size, that the
    path holds at least 2 frames, and that run.json can be updated."""
    import os
    from pathlib import Path

    from whichway.cli._options import check_at_least
    from whichway.metrics.score import FRAME_SUFFIXES, find_frames

    check_at_least("--batch-size", args.batch_size, 1)
    files, _, record = find_frames(args.path)  # FileNotFoundError / ValueError naming the path
    if len(files) < 2:
        raise ValueError(
            f"{args.path} holds {len(files)} frame(s); a path needs at least 2 ({', '.join(FRAME_SUFFIXES)})"
        )
    root = Path(args.path)
    if (
        record is not None
        and not args.no_write
        and not (os.access(root / "run.json", os.W_OK) and os.access(root, os.W_OK | os.X_OK))
    ):
        raise ValueError(
            f"cannot update {root / 'run.json'} (not writable); pass --no-write to only print the metrics"
        )


def run(args: argparse.Namespace) -> int:
    check_args(args)

    import torch

    from whichway.metrics.score import score_run

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = score_run(
        args.path,
        args.net,
        pretrained_backbone=not args.random_backbone,
        device=device,
        batch_size=args.batch_size,
        write=not args.no_write,
    )
    print(json.dumps(metrics, indent=2) if args.json else _table(metrics))
    return 0
