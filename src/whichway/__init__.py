"""whichway: geometry-aware interpolation for diffusion models.

Two geometric cores, both pure tensor math:

* :mod:`whichway.clouds` -- prompt embeddings as point clouds; optimal-transport couplings,
  displacement interpolation, W2 distances and barycenters (Karris et al., arXiv 2511.12757).
* :mod:`whichway.gaussian` -- COG, Gaussian-faithful linear combinations of noise latents
  (interpolation, centroids, subspaces) and the LERP / SLERP / NAO baselines.

Public names are imported lazily (PEP 562) so that ``import whichway`` and ``whichway --help``
do not pay for importing torch.
"""

from __future__ import annotations

from whichway._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # clouds
    "Coupling": "whichway.clouds",
    "Barycenter": "whichway.clouds",
    "couple": "whichway.clouds",
    "interpolate_clouds": "whichway.clouds",
    "wasserstein2": "whichway.clouds",
    "path_length_w2": "whichway.clouds",
    "cloud_barycenter": "whichway.clouds",
    "COUPLING_METHODS": "whichway.clouds",
    # gaussian
    "cog": "whichway.gaussian",
    "cog_interpolate": "whichway.gaussian",
    "cog_centroid": "whichway.gaussian",
    "cog_iid": "whichway.gaussian",
    "LatentSubspace": "whichway.gaussian",
    "lerp": "whichway.gaussian",
    "slerp": "whichway.gaussian",
    "euclidean_centroid": "whichway.gaussian",
    "standardized_centroid": "whichway.gaussian",
    "mode_norm_centroid": "whichway.gaussian",
    "nao_interpolate": "whichway.gaussian",
    "nao_centroid": "whichway.gaussian",
    "NAOPath": "whichway.gaussian",
    "NAOCentroid": "whichway.gaussian",
    "pick_interior": "whichway.gaussian",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
