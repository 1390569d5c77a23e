"""The studio's tabs, one module each; every module's ``*_tab`` function builds its tab inside
the page's ``gr.Blocks`` (:func:`whichway.studio.app.build_app`)."""
