"""Paper B's latent study: COG against LERP / SLERP / NAO and the centroid baselines.

Protocol (DESIGN.md section 1.2): real images in one folder per class (the class name is the
prompt) are DDIM-inverted to their initial latents (default 400 steps, guidance 1.0). Within each
class, seeded pairs of latents are interpolated (3 interior points per path; LERP, SLERP and COG
at t = 1/4, 1/2, 3/4, NAO on an 11-point path with 3 points picked at uniform index distance),
and seeded groups of 3 / 5 / 10 / 25 latents are averaged (Euclidean, standardised, mode-norm,
NAO and COG centroids). Every combined latent is rendered with the class prompt; then, per
method, FID against the real images (Inception features of 64 / 192 / 768 / 2048 dimensions) and
the accuracy of an ImageNet classifier (class = folder name) are measured, and the time each
method takes per path or centroid is reported (paper B's Tables 1 and 2).

Three phases, all resumable in one run directory:

1. **inversion** -- one unit per image; the latent is cached as
   ``latents/<class>/<image>.safetensors`` (written atomically before the unit is recorded, with
   the SHA-256 of its data in the header). On a resume every recorded inversion's cached latent is
   checked: a damaged one is moved to ``latents/<class>/damaged/`` and inverted again (never
   loaded); a missing one is inverted again only when a unit still to run needs it;
2. **combination** -- one unit per pair (``interp:...``) or group (``centroid:...``): every method's
   latents rendered in one batch; images saved under ``images/<kind>/<method>/<class>/``;
3. **scoring** -- in the driver, streaming the saved images through the FID accumulators and the
   classifier; written to ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichway.studies.config import LatentStudyConfig, from_dict, to_dict
from whichway.studies.executors import Unit, UnitResult, WorkerSpec
from whichway.studies.prompt_study import StudyRun, prepare_run, safe_name

log = logging.getLogger(__name__)

WORKER = "whichway.studies.latent_study:LatentStudyWorker"
STUDY = "latents"
DETERMINISTIC_COLUMNS: tuple[str, ...] = ("unit_id", "kind", "method", "class_name", "members")


@dataclass(frozen=True)
class ClassImages:
    """One class of the image folder: name, prompt and its image files (sorted)."""

    name: str
    prompt: str
    files: tuple[Path, ...]


def find_classes(cfg: LatentStudyConfig) -> list[ClassImages]:
    """Classes of ``data.root`` (sub-folders, or ``data.classes``), first ``images_per_class``
    images of each by file name. Empty or too small classes warn and are skipped."""
    d = cfg.data
    if not d.root:
        raise ValueError(
            "data.root is not set: give the folder that holds one sub-folder of images per class"
        )
    root = Path(d.root)
    if not root.is_dir():
        raise ValueError(f"data.root {str(root)!r} does not exist or is not a folder")
    names = list(d.classes) if d.classes else sorted(p.name for p in root.iterdir() if p.is_dir())
    exts = {e.lower() for e in d.extensions}
    need = max([2, *cfg.centroids.sizes]) if cfg.centroids.methods else 2
    out = []
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise ValueError(
                f"class folder {str(folder)!r} does not exist; classes found: "
                f"{sorted(p.name for p in root.iterdir() if p.is_dir())}"
            )
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)[
            : d.images_per_class
        ]
        if not files:
            warnings.warn(
                f"class {name!r} has no images ({', '.join(sorted(exts))}); it is skipped",
                stacklevel=2,
            )
            continue
        if len(files) < 2:
            warnings.warn(
                f"class {name!r} has only 1 image; pairs need 2, so it is skipped", stacklevel=2
            )
            continue
        if len(files) < need:
            warnings.warn(
                f"class {name!r} has {len(files)} images, fewer than the largest centroid "
                f"size {need}; larger centroids are skipped for it",
                stacklevel=2,
            )
        out.append(
            ClassImages(name, d.prompt_template.format(name=name.replace("_", " ")), tuple(files))
        )
    if not out:
        raise ValueError(f"no class under {str(root)!r} has at least 2 images")
    return out


def within_class_pairs(n: int, count: int, seed: int, class_name: str) -> list[tuple[int, int]]:
    """``count`` distinct unordered pairs (i < j) of n items, seeded by (seed, class)."""
    import torch

    from whichway.studies.pairs import derive_seed

    all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    g = torch.Generator().manual_seed(derive_seed("pairs", seed, class_name))
    order = torch.randperm(len(all_pairs), generator=g)[:count].tolist()
    return [all_pairs[k] for k in order]


def centroid_groups(
    n: int, sizes: Sequence[int], groups: Sequence[int], seed: int, class_name: str
) -> list[tuple[int, int, tuple[int, ...]]]:
    """(size, index, members) of seeded random groups; sizes larger than n are skipped."""
    import torch

    from whichway.studies.pairs import derive_seed

    out = []
    for k, count in zip(sizes, groups):
        if k > n:
            continue
        for gi in range(count):
            g = torch.Generator().manual_seed(derive_seed("centroid", seed, class_name, k, gi))
            out.append((k, gi, tuple(sorted(torch.randperm(n, generator=g)[:k].tolist()))))
    return out


class RandomFeatures:
    """A seeded random feature extractor for FID in smoke tests: images (N, 3, H, W) in [0, 1]
    -> average-pooled 16x16 -> fixed random projection to ``dims`` -> tanh. Not Inception:
    values are not comparable with published FID."""

    def __init__(self, dims: int, seed: int = 0) -> None:
        import torch

        g = torch.Generator().manual_seed(seed + dims)
        self.weight = torch.randn(3 * 16 * 16, dims, generator=g) / (3 * 16 * 16) ** 0.5

    def __call__(self, images: Any) -> Any:
        import torch.nn.functional as F

        x = F.adaptive_avg_pool2d(images.float(), 16).flatten(1)
        return (x @ self.weight.to(x.device)).tanh()


class LatentStudyWorker:
    """Loads the model once; inverts images and renders combined latents, one unit per call."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        from whichway.models import load_adapter

        self.cfg: LatentStudyConfig = from_dict(LatentStudyConfig, config)
        m = self.cfg.model
        self.adapter = load_adapter(
            m.id,
            device=m.device or None,
            dtype=m.dtype or None,
            variant=m.variant or None,
            runtime=m.runtime_options(),
        )
        dh, dw = self.adapter.default_size
        self.height = self.cfg.render.height or dh
        self.width = self.cfg.render.width or dw
        self._cond: dict[str, Any] = {}
        if hasattr(self.adapter, "use_scheduler"):
            # inverted latents reconstruct only under the sampler they were inverted for (DDIM,
            # flow Euler); a resumed run may not invert anything
            self.adapter.use_scheduler("inversion")
        self.negative = self.adapter.encode_negative(None, 1)

    def _encode(self, prompt: str) -> Any:
        if prompt not in self._cond:
            self._cond[prompt] = self.adapter.encode([prompt])
        return self._cond[prompt]

    def __call__(self, unit: Unit) -> UnitResult:
        kind = unit.payload["kind"]
        if kind == "inversion":
            return self._invert(unit)
        return self._combine(unit)

    def _invert(self, unit: Unit) -> UnitResult:
        p = unit.payload
        start = time.perf_counter()
        latent = self.adapter.invert(
            p["image"],
            p["prompt"],
            steps=self.cfg.inversion.steps,
            guidance=self.cfg.inversion.guidance,
            height=self.height,
            width=self.width,
        )
        seconds = time.perf_counter() - start
        # the adapter's own inversion ("ddim" for SD/SDXL, "flow" Euler inversion for SD3/Flux)
        method = getattr(self.adapter, "inversion", "") or "ddim"
        row = {
            "kind": "inversion",
            "method": method,
            "class_name": p["class_name"],
            "members": p["name"],
            "seconds": seconds,
            "render_seconds": 0.0,
            "images": [],
        }
        return UnitResult(unit.unit_id, (row,), tensors={p["cache"]: latent}, seconds=seconds)

    def _latents_for(self, kind: str, method: str, x: Any, seed: int) -> Any:
        """The combined latents (k, C, h, w) of one method for a pair (x: (2, ...)) or group."""
        import torch

        from whichway import gaussian

        if kind == "interpolation":
            ic = self.cfg.interpolation
            k = ic.interior
            ts = torch.arange(1, k + 1, dtype=torch.float64) / (k + 1)
            if method == "nao":
                g = torch.Generator().manual_seed(seed)
                path = gaussian.nao_interpolate(
                    x[0], x[1], n_points=ic.nao_points, max_iter=ic.nao_max_iter, generator=g
                )
                return gaussian.pick_interior(path, k)
            fn = {"lerp": gaussian.lerp, "slerp": gaussian.slerp, "cog": gaussian.cog_interpolate}[
                method
            ]
            return fn(x[0], x[1], ts.to(x.dtype))
        cc = self.cfg.centroids
        if method == "nao":
            g = torch.Generator().manual_seed(seed)
            return gaussian.nao_centroid(
                x, cc.nao_points, max_iter=cc.nao_max_iter, generator=g
            ).centroid[None]
        fn = {
            "euclidean": gaussian.euclidean_centroid,
            "standardized": gaussian.standardized_centroid,
            "mode_norm": gaussian.mode_norm_centroid,
            "cog": gaussian.cog_centroid,
        }[method]
        return fn(x)[None]

    def _combine(self, unit: Unit) -> UnitResult:
        import torch

        from whichway.render import render_frames

        start = time.perf_counter()
        p = unit.payload
        kind = p["kind"]
        x = p["latents"]
        methods = p["methods"]
        per_method: dict[str, Any] = {}
        seconds: dict[str, float] = {}
        for m in methods:
            t0 = time.perf_counter()
            per_method[m] = self._latents_for(kind, m, x, int(p["seed"]))
            seconds[m] = time.perf_counter() - t0
        all_latents = torch.cat([per_method[m] for m in methods])
        cond = self._encode(p["prompt"]).expand(len(all_latents))
        t0 = time.perf_counter()
        images = render_frames(
            self.adapter,
            cond,
            all_latents,
            steps=self.cfg.render.steps,
            guidance=self.cfg.render.guidance,
            height=self.height,
            width=self.width,
            batch_size=self.cfg.render.batch_size,
            negative=self.negative,
            progress=False,
        )
        render_s = time.perf_counter() - t0
        assert images is not None
        files: dict[str, Any] = {}
        rows = []
        offset = 0
        for m in methods:
            n = len(per_method[m])
            paths = []
            for j in range(n):
                rel = f"images/{kind}/{m}/{safe_name(p['class_name'])}/{safe_name(unit.unit_id)}_{j}.png"
                files[rel] = images[offset + j]
                paths.append(rel)
            offset += n
            rows.append(
                {
                    "kind": kind,
                    "method": m,
                    "class_name": p["class_name"],
                    "members": p["members"],
                    "seconds": seconds[m],
                    "render_seconds": render_s * n / len(all_latents),
                    "images": paths,
                }
            )
        total = time.perf_counter() - start
        for r in rows:
            r["unit_seconds"] = total
        return UnitResult(unit.unit_id, tuple(rows), files=files, seconds=total)


# --- driver --------------------------------------------------------------------------------------
def check_cached_latent(path: Path, *, needed: bool = True) -> bool:
    """Whether the cached latent at ``path`` can be used; a damaged one (unreadable, truncated or
    failing its checksum) is moved to a ``damaged/`` folder next to it (a suffix is added on a name
    collision) with one warning line. A missing one is fine unless ``needed``."""
    from whichway.studies.executors import DamagedTensorError, load_tensor
    from whichway.studies.store import set_aside

    try:
        load_tensor(path)
        return True
    except FileNotFoundError:
        if needed:
            log.warning("cached latent %s is missing; it will be computed again", path)
        return not needed
    except DamagedTensorError as exc:
        moved = set_aside(path, path.parent / "damaged")
        log.warning(
            "damaged cached latent %s: %s; moved to %s; it will be computed again", path, exc, moved
        )
        return False


def _load_real(path: Path, size: tuple[int, int] | None = None) -> Any:
    """An image (3, H, W) in [0, 1], resized to size = (height, width) when given."""
    from whichway.media import load_image

    return load_image(path, size=size)


def latent_cache_path(class_name: str, image_name: str) -> str:
    """Where a run keeps the inverted latent of image ``image_name`` of class ``class_name``,
    relative to the run directory (shared with :func:`whichway.studies.verify.verify_run`)."""
    return f"latents/{safe_name(class_name)}/{safe_name(Path(image_name).stem)}.safetensors"


def run_latent_study(
    config: LatentStudyConfig,
    run_dir: str | Path,
    *,
    executor: Any = None,
    progress: bool | None = None,
) -> StudyRun:
    """Run (or resume) paper B's latent study of ``config`` into ``run_dir`` (all three phases)."""
    import datetime

    from whichway.studies.executors import load_tensor, make_executor, run_units, save_outputs
    from whichway.studies.pairs import derive_seed
    from whichway.studies.store import ResultStore
    from whichway.studies.timebudget import check_recorded, time_budget

    run_dir = Path(run_dir)
    classes = find_classes(config)
    budget = time_budget(STUDY, config)
    cfg_dict = to_dict(config)
    show = config.run.progress if progress is None else progress
    own = executor is None
    spec = WorkerSpec(WORKER, {"config": cfg_dict})
    t_start = time.perf_counter()
    # the units (ids and members) depend only on the classes and the config
    cache: dict[tuple[str, int], str] = {}
    inv: list[tuple[str, str, ClassImages, int]] = []  # (unit id, cache path, class, image index)
    for c in classes:
        for i, f in enumerate(c.files):
            rel = latent_cache_path(c.name, f.name)
            cache[(c.name, i)] = rel
            inv.append((f"invert:{c.name}/{f.name}", rel, c, i))
    combo: list[Unit] = []
    for c in classes:
        n = len(c.files)
        if config.interpolation.methods:
            for i, j in within_class_pairs(
                n, config.interpolation.pairs_per_class, config.study.seed, c.name
            ):
                uid = f"interp:{c.name}:{c.files[i].name}|{c.files[j].name}"
                combo.append(
                    Unit(
                        uid,
                        {
                            "kind": "interpolation",
                            "members": f"{c.files[i].name}|{c.files[j].name}",
                            "idx": (i, j),
                            "class": c,
                        },
                    )
                )
        if config.centroids.methods:
            for k, gi, members in centroid_groups(
                n, config.centroids.sizes, config.centroids.groups, config.study.seed, c.name
            ):
                uid = f"centroid:{c.name}:k{k}:{gi}"
                combo.append(
                    Unit(
                        uid,
                        {
                            "kind": "centroids",
                            "members": "|".join(c.files[m].name for m in members),
                            "idx": members,
                            "class": c,
                        },
                    )
                )
    n_units = len(inv) + len(combo)

    def inversion_payload(c: ClassImages, i: int, rel: str) -> dict[str, Any]:
        f = c.files[i]
        return {
            "kind": "inversion",
            "image": _load_real(f),
            "prompt": c.prompt,
            "class_name": c.name,
            "name": f.name,
            "cache": rel,
        }

    with ResultStore(run_dir) as store:
        manifest = prepare_run(
            store,
            STUDY,
            cfg_dict,
            {
                "classes": [c.name for c in classes],
                "images": sum(len(c.files) for c in classes),
                "units": n_units,
            },
        )
        if own:
            rc = config.run
            executor = make_executor(
                rc.executor,
                address=rc.address,
                workers=rc.workers,
                cpus_per_worker=rc.cpus_per_worker,
            )
        try:
            # phase 1: inversion (images are read here, in the driver, only for units still to run).
            # A recorded inversion's cached latent is checked first: a damaged one is set aside and
            # computed again; a missing one only when a path or centroid still to run needs it.
            done = store.completed()
            need = {
                (u.payload["class"].name, i)
                for u in combo
                if u.unit_id not in done
                for i in u.payload["idx"]
            }
            # a resume over its time budget is refused here, before any worker loads its model
            later = sum(u.unit_id not in done for u in combo)  # paths and centroids left
            left = later + sum(uid not in done for uid, *_ in inv)
            check_recorded(budget, store, left, int(getattr(executor, "workers", 1)))
            redo = [
                Unit(uid, inversion_payload(c, i, rel))
                for uid, rel, c, i in inv
                if uid in done
                and not check_cached_latent(run_dir / rel, needed=(c.name, i) in need)
            ]
            for result in executor.map(spec, redo) if redo else ():
                save_outputs(run_dir, result)  # the unit's rows are recorded already
            inv_units = [
                Unit(uid, None if uid in done else inversion_payload(c, i, rel))
                for uid, rel, c, i in inv
            ]
            total = run_units(
                store,
                executor,
                spec,
                inv_units,
                progress=show,
                desc="inversions",
                budget=budget,
                later=later,
            )["ran"]

            # phase 2: interpolation paths and centroids
            done = store.completed()
            units = []
            for u in combo:  # load cached latents only for units still to run
                if u.unit_id in done:
                    units.append(Unit(u.unit_id, None))
                    continue
                c = u.payload["class"]
                import torch

                x = torch.stack(
                    [load_tensor(run_dir / cache[(c.name, i)]) for i in u.payload["idx"]]
                )
                kind = u.payload["kind"]
                methods = list(
                    config.interpolation.methods
                    if kind == "interpolation"
                    else config.centroids.methods
                )
                units.append(
                    Unit(
                        u.unit_id,
                        {
                            "kind": kind,
                            "latents": x,
                            "methods": methods,
                            "prompt": c.prompt,
                            "class_name": c.name,
                            "members": u.payload["members"],
                            "seed": derive_seed("nao", config.study.seed, u.unit_id),
                        },
                    )
                )
            total += run_units(
                store,
                executor,
                spec,
                units,
                progress=show,
                desc="paths and centroids",
                budget=budget,
            )["ran"]
        finally:
            if own:
                executor.close()

        # phase 3: scoring in the driver
        metrics = score_latent_study(config, run_dir, store.read(), classes)
        from whichway.studies.store import atomic_write_json

        atomic_write_json(run_dir / "metrics.json", metrics)
        store.compact()  # one file instead of one shard per unit (crash-safe, see store.py)
        manifest.update(
            status="complete",
            units=n_units,
            finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            units_recorded=len(store.completed()),
        )
        store.write_manifest(manifest)
    return StudyRun(
        run_dir, n_units, int(total), n_units - int(total), time.perf_counter() - t_start
    )


def score_latent_study(
    config: LatentStudyConfig, run_dir: Path, df: Any, classes: Sequence[ClassImages]
) -> dict[str, Any]:
    """FID per (kind, method) at each feature size against the real images (resized to the
    generated images' size), and classifier accuracy (class = folder name), from the images
    saved in ``run_dir``."""
    import torch

    from whichway.media import load_image
    from whichway.metrics.fid import FID

    mc = config.metrics
    generated = [f for imgs in df.get("images", []) for f in imgs]
    if generated:
        first = load_image(run_dir / generated[0])
        size: tuple[int, int] | None = (int(first.shape[-2]), int(first.shape[-1]))
    else:
        size = None
    device = mc.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def extractor(d: int) -> Any:
        return RandomFeatures(d) if mc.fid_features == "random" else None

    fids = {
        d: FID(extractor(d), dims=d, device=device, batch_size=mc.batch_size) for d in mc.fid_dims
    }
    bs = mc.batch_size
    real_files = [f for c in classes for f in c.files]
    for s in range(0, len(real_files), bs):
        batch = torch.stack([_load_real(f, size or (512, 512)) for f in real_files[s : s + bs]])
        for fid in fids.values():
            fid.update(batch, real=True)
    clf = None
    if mc.classifier:
        from whichway.metrics.classify import ClassifierAccuracy

        clf = ClassifierAccuracy(
            mc.classifier, pretrained=mc.pretrained, device=device, batch_size=bs
        )
    out: dict[str, Any] = {
        "real_images": len(real_files),
        "fid_features": mc.fid_features,
        "classifier": mc.classifier,
        "classifier_pretrained": mc.pretrained,
    }
    for kind in ("interpolation", "centroids"):
        sub = df[df["kind"] == kind] if "kind" in df.columns else df.iloc[0:0]
        out[kind] = {}
        for method in dict.fromkeys(sub["method"]):
            rows = sub[sub.method == method]
            files = [
                (run_dir / f, cls)
                for imgs, cls in zip(rows["images"], rows["class_name"])
                for f in imgs
            ]
            for fid in fids.values():
                fid.reset(keep_real=True)
            if clf is not None:
                clf.reset()
            for s in range(0, len(files), bs):
                chunk = files[s : s + bs]
                batch = torch.stack([load_image(f) for f, _ in chunk])
                for fid in fids.values():
                    fid.update(batch, real=False)
                if clf is not None:
                    clf.update(batch, [cls.replace("_", " ") for _, cls in chunk])
            res: dict[str, Any] = {"images": len(files)}
            for d, fid in fids.items():
                res[f"fid_{d}"] = fid.compute() if len(files) >= 2 else float("nan")
            if clf is not None:
                acc = clf.compute()
                res["accuracy_top1"], res["accuracy_top5"] = acc.top1, acc.top5
            out[kind][method] = res
    return out
