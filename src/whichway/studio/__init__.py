"""``whichway studio``: a local web app (Gradio) over morph, compare and the token matching.

:class:`Studio` (``session.py``) holds the model, runs one job at a time and calls the library;
:func:`build_app` / :func:`launch` (``app.py``, imports gradio) build and serve the page.
"""

from whichway._lazy import lazy_exports

__all__ = ["Studio", "build_app", "launch"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Studio": "whichway.studio.session",
        "build_app": "whichway.studio.app",
        "launch": "whichway.studio.app",
    },
    globals(),
)
