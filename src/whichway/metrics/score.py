"""Score a morph run directory (or a folder of frames) with the path metrics.

Reads the run directory that ``whichway morph`` writes (``run.json`` with the frames' t values and
file names, ``frames/NNNN.png``), or any directory of image frames sorted by name (then t is
uniform), measures the LPIPS path metrics (:class:`~whichway.metrics.PathMetrics`) and writes them
into ``run.json`` under ``"metrics"`` (atomically: temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FRAME_SUFFIXES", "find_frames", "load_frames", "score_run"]

#: Image files a plain frame directory may hold.
FRAME_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")

_RUN_FILE = "run.json"


def find_frames(
    path: str | os.PathLike[str],
) -> tuple[list[Path], list[float] | None, dict[str, Any] | None]:
    """Frame files, their t values and the run record of a run directory or frame folder.

    A directory with ``run.json`` gives the frames and t listed there; otherwise the image files
    (``.png``, ``.jpg``, ``.jpeg``, ``.webp``) of ``path/frames/`` or of ``path`` itself, sorted by
    name, with ``t = None`` (uniform).

    Returns
    -------
    (frame paths, t or None, run record or None)
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(
            f"{str(root)!r} does not exist; give a run directory or a folder of frames"
        )
    if not root.is_dir():
        raise ValueError(
            f"{str(root)!r} is not a directory; give a run directory or a folder of frames"
        )
    run_file = root / _RUN_FILE
    if run_file.is_file():
        try:
            record = json.loads(run_file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{str(run_file)!r} is not valid JSON: {exc}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("frames"), list):
            raise ValueError(f"{str(run_file)!r} has no 'frames' list; is it a whichway morph run?")
        files = [root / f for f in record["frames"]]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} frame(s) listed in {str(run_file)!r} are missing (first: {missing[0]!r}); "
                "finish the run (re-run the same morph command to resume) and score again"
            )
        t = record.get("t")
        if t is not None and (not isinstance(t, list) or len(t) != len(files)):
            raise ValueError(
                f"{str(run_file)!r} lists {len(files)} frames but {len(t) if isinstance(t, list) else t!r} t values"
            )
        return files, t, record
    folder = root / "frames" if (root / "frames").is_dir() else root
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES
    )
    return files, None, None


def load_frames(files: list[Path]) -> Any:
    """Read frames as one tensor (T, 3, H, W) float32 in [0, 1]; every frame must have one size."""
    import torch

    from whichway.media import load_image

    if len(files) < 2:
        where = f" in {str(files[0].parent)!r}" if files else ""
        raise ValueError(
            f"a path needs at least 2 frames, found {len(files)}{where} (image files: {', '.join(FRAME_SUFFIXES)})"
        )
    images = [load_image(f) for f in files]
    size = images[0].shape[1:]
    for f, img in zip(files, images):
        if img.shape[1:] != size:
            raise ValueError(
                f"frames differ in size: {files[0].name} is {size[0]}x{size[1]} but {f.name} is "
                f"{img.shape[1]}x{img.shape[2]} (height x width); a path's frames must share one size"
            )
    return torch.stack(images)


def score_run(
    run_dir: str | os.PathLike[str],
    net: str = "alex",
    *,
    pretrained_backbone: bool = True,
    device: str | None = None,
    batch_size: int = 8,
    write: bool = True,
    meter: Any = None,
) -> dict[str, Any]:
    """LPIPS path metrics of a morph run, written into its ``run.json``.

    Parameters
    ----------
    run_dir : path
        A ``whichway morph`` run directory, or a directory of frames sorted by name.
    net : {"alex", "vgg"}
        LPIPS backbone.
    pretrained_backbone : bool
        ``False`` uses a random backbone (smoke tests; values not comparable with published LPIPS).
    device : str, optional
        Where LPIPS runs (CPU by default).
    write : bool
        Update ``run.json`` (only when the directory has one).
    meter : LPIPSPath, optional
        An already loaded LPIPS model to reuse (then ``net``, ``pretrained_backbone`` and
        ``device`` are taken from it).

    Returns
    -------
    dict
        ``ppl``, ``ppl_normalized``, ``smoothness``, ``consistency``, ``max_step``, ``n_frames``,
        ``steps``, ``t``, the LPIPS settings, and the embedding measurements recorded by the run
        (``couplings``) when present.
    """
    from whichway._checks import check_choice
    from whichway.metrics.lpips_path import LPIPS_NETS, LPIPSPath

    check_choice("net", net, LPIPS_NETS)
    files, t, record = find_frames(run_dir)
    frames = load_frames(files)
    if meter is None:
        meter = LPIPSPath(net, pretrained_backbone=pretrained_backbone, device=device)
    else:
        net, pretrained_backbone = meter.net, meter.pretrained_backbone
    result = meter.path_metrics(frames, t, batch_size=batch_size)
    metrics: dict[str, Any] = {
        **result.to_dict(),
        "lpips": {
            "net": net,
            "version": "0.1",
            "pretrained_backbone": bool(pretrained_backbone),
            "frame_size": [int(frames.shape[2]), int(frames.shape[3])],
        },
    }
    if record is not None and isinstance(record.get("couplings"), list):
        metrics["couplings"] = record["couplings"]
    if record is not None and write:
        from whichway.morph import write_json_atomic

        fresh = json.loads(
            (Path(run_dir) / _RUN_FILE).read_text()
        )  # re-read: keep concurrent edits
        fresh["metrics"] = {k: v for k, v in metrics.items() if k != "couplings"}
        write_json_atomic(Path(run_dir) / _RUN_FILE, fresh)
    return metrics
