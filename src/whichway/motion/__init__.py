"""Journeys with motion: whichway's per-frame travel conditioning denoised together by an
AnimateDiff motion adapter, over sliding context windows for videos longer than the adapter.

- :mod:`whichway.motion.windows`: the context windows and their overlap weights (no torch);
- :mod:`whichway.motion.interpolation`: FreeNoise-style ``prompt_interpolation_callback``s
  (diffusers' lerp, whichway's OT path);
- :mod:`whichway.motion.adapter`: checks of a motion adapter before its weights load, loading it,
  and the AnimateDiff UNet built from the base model's UNet;
- :mod:`whichway.motion.denoise`: the windowed video denoising loop.
"""
