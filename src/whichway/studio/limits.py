"""What one studio job may ask for: limits the host sets (``whichway studio --max-frames
--max-pixels --max-steps --max-seconds``), checked before a job is queued (standard library only).

A web page is reachable by whoever the host lets in, and one request must not take the machine:
every job's frame count, frame size, step count and video length are compared with these limits,
and its frames on disk and memory with the machine's (:func:`whichway.budget.check_request`),
before anything is allocated, loaded or queued. A refusal is one line in the page.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_FRAMES = 10_000
DEFAULT_MAX_PIXELS = 2048 * 2048
DEFAULT_MAX_STEPS = 1000
DEFAULT_MAX_SECONDS = 600.0


@dataclass(frozen=True)
class Limits:
    """The most one job may ask for.

    max_frames : frames of one morph, travel or comparison (per coupling)
    max_pixels : height x width of one frame
    max_steps : denoising, inversion and DiffMorpher LoRA fit steps (each count on its own)
    max_seconds : length of a travel's video
    """

    max_frames: int = DEFAULT_MAX_FRAMES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_steps: int = DEFAULT_MAX_STEPS
    max_seconds: float = DEFAULT_MAX_SECONDS

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_pixels", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}"
                )
        if not 0 < self.max_seconds < float("inf"):
            raise ValueError(f"--max-seconds must be a number > 0, got {self.max_seconds!r}")

    def describe(self) -> str:
        """The limits as one line (printed at start, shown in the page)."""
        side = int(self.max_pixels**0.5)
        return (
            f"Limits per job: {self.max_frames:,} frames, {self.max_pixels:,} pixels per frame "
            f"(e.g. {side}x{side}), {self.max_steps:,} steps, {self.max_seconds:g} s of video."
        )

    def check_frames(self, frames: int) -> None:
        if frames > self.max_frames:
            raise ValueError(
                f"{frames:,} frames is more than this studio's limit of {self.max_frames:,} per job "
                "(whichway studio --max-frames); use fewer frames or the command line"
            )

    def check_size(self, height: int, width: int) -> None:
        if height * width > self.max_pixels:
            raise ValueError(
                f"{width}x{height} is {height * width:,} pixels per frame, more than this studio's "
                f"limit of {self.max_pixels:,} (whichway studio --max-pixels)"
            )

    def check_steps(self, steps: int | None, what: str = "steps") -> None:
        if steps is not None and steps > self.max_steps:
            raise ValueError(
                f"{steps:,} {what} is more than this studio's limit of {self.max_steps:,} "
                "(whichway studio --max-steps)"
            )

    def check_seconds(self, seconds: float) -> None:
        if seconds > self.max_seconds:
            raise ValueError(
                f"a video of {seconds:,.1f} s is longer than this studio's limit of "
                f"{self.max_seconds:g} s (whichway studio --max-seconds)"
            )
