"""whichway's ComfyUI node pack (this folder is what goes into ComfyUI/custom_nodes/).

It only imports the nodes from the installed ``whichway`` package. When that import fails (whichway
or one of its dependencies is missing from the Python that runs ComfyUI), it logs one line naming
what to install and exports no nodes, so ComfyUI keeps starting and its log says why.
"""

import logging
import sys
from pathlib import Path

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}


def _whichway_requirement() -> str:
    """What pip should install for whichway: the clone this folder was linked from (its
    ``src/whichway/comfyui/pack``; whichway need not be on PyPI), else the package name."""
    parents = Path(__file__).resolve().parents  # pack, comfyui, whichway, src, the clone
    if len(parents) > 4:
        root = parents[4]
        try:
            if 'name = "whichway"' in (root / "pyproject.toml").read_text(encoding="utf-8"):
                return f'-e "{root}[comfyui]"'
        except OSError:
            pass
    return '"whichway[comfyui]"'


try:
    # the couplings need SciPy and POT when they run: a missing one is reported at load time
    import ot  # noqa: F401
    import scipy.optimize  # noqa: F401

    from whichway.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as exc:  # whichway or a dependency of it is not installed in this Python
    missing = (getattr(exc, "name", None) or str(exc)).split(".")[0]
    # import names whose pip package is called otherwise
    package = {"ot": "pot", "PIL": "pillow", "yaml": "pyyaml"}.get(missing, missing)
    logging.getLogger("whichway").error(
        "whichway nodes not loaded: the Python running ComfyUI (%s) lacks %r; install it with: "
        "%s -m pip install %s",
        sys.executable,
        package,
        sys.executable,
        _whichway_requirement() if package == "whichway" else package,
    )

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
