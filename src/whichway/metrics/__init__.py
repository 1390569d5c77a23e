"""Measurements of interpolation paths and image sets.

* Path metrics over frames (T, 3, H, W) in [0, 1]: per-step LPIPS with one backbone pass per frame
  (:class:`LPIPSPath`), PPL :math:`\\sum_k d_k`, the StyleGAN-style :math:`\\sum_k d_k/\\Delta t_k^2`,
  smoothness :math:`1 - \\mathrm{Gini}(d)`, consistency :math:`\\bar d` and the largest step
  (:class:`PathMetrics`).
* Image-set metrics: streaming FID (:class:`FID`, :class:`FrechetAccumulator`) and top-1/top-5
  accuracy of a timm classifier (:class:`ClassifierAccuracy`).
* Embedding-space metrics of prompt paths: coupling cost and W₂ path length
  (:func:`embedding_path_metrics`).
* Perceptual frame spacing (:func:`respace`) and run scoring (:func:`score_run`).

Names are imported lazily (PEP 562): ``import whichway.metrics`` loads neither lpips, timm nor
torch-fidelity.
"""

from __future__ import annotations

from whichway._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # weights
    "WeightsUnavailableError": "whichway.metrics._weights",
    # path statistics
    "PathMetrics": "whichway.metrics.smoothness",
    "gini": "whichway.metrics.smoothness",
    "path_metrics_from_steps": "whichway.metrics.smoothness",
    # LPIPS
    "LPIPS_NETS": "whichway.metrics.lpips_path",
    "LPIPSPath": "whichway.metrics.lpips_path",
    "check_frames": "whichway.metrics.lpips_path",
    "lpips_distances": "whichway.metrics.lpips_path",
    "perceptual_path_length": "whichway.metrics.lpips_path",
    # FID
    "FID": "whichway.metrics.fid",
    "INCEPTION_DIMS": "whichway.metrics.fid",
    "FrechetAccumulator": "whichway.metrics.fid",
    "FrechetStatistics": "whichway.metrics.fid",
    "InceptionFeatures": "whichway.metrics.fid",
    "frechet_distance": "whichway.metrics.fid",
    # classifier accuracy
    "DEFAULT_CLASSIFIER": "whichway.metrics.classify",
    "AccuracyResult": "whichway.metrics.classify",
    "ClassifierAccuracy": "whichway.metrics.classify",
    "imagenet_class_index": "whichway.metrics.classify",
    "topk_correct": "whichway.metrics.classify",
    # embedding space
    "EmbeddingPathMetrics": "whichway.metrics.embedding",
    "embedding_path_metrics": "whichway.metrics.embedding",
    # spacing and scoring
    "RespaceResult": "whichway.metrics.spacing",
    "invert_cumulative": "whichway.metrics.spacing",
    "respace": "whichway.metrics.spacing",
    "score_run": "whichway.metrics.score",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
