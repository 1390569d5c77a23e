"""Pixels on disk: PNG round trips, labelled strips and grids, animations in each format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from whichway.media import (
    contact_strip,
    labelled_grid,
    load_image,
    save_image,
    to_pil,
    write_animation,
)


def _frames(n: int = 4, size: int = 24) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [to_pil(torch.rand(3, size, size + 2, generator=g)) for _ in range(n)]


def test_png_round_trip_is_exact_to_8_bits(tmp_path):
    image = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(1))
    path = save_image(image, tmp_path / "sub" / "a.png")
    back = load_image(path)
    assert back.shape == (3, 17, 23)
    assert torch.allclose(back, image, atol=0.5 / 255 + 1e-6)
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_to_pil_clips_out_of_range_values():
    pixels = np.asarray(to_pil(torch.tensor([[[-1.0, 2.0]]]).expand(3, 1, 2)))
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[0, 1].tolist() == [255, 255, 255]


def test_load_image_resizes_to_height_width(tmp_path):
    to_pil(torch.rand(3, 40, 30)).save(tmp_path / "x.png")
    assert load_image(tmp_path / "x.png", size=(16, 8)).shape == (3, 16, 8)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="could not read .*bad.png"):
        load_image(tmp_path / "bad.png")


def test_strip_and_grid_layout_sizes():
    frames = _frames(3, 24)
    strip = contact_strip(frames, [0.0, 0.5, 1.0])
    grid = labelled_grid(frames + frames[:1], ["a", "b", "c", "d"], columns=2)
    assert strip.width > 3 * 26 and strip.height > 24  # three cells side by side plus labels
    assert grid.width < strip.width and grid.height > strip.height  # 2 x 2
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        labelled_grid(frames, ["a", "b"])


@pytest.mark.parametrize("fmt", ["gif", "webp", "mp4"])
def test_animation_formats_hold_every_frame(tmp_path, fmt):
    import imageio.v3 as iio

    frames = _frames(4, 24)
    path = write_animation(frames, tmp_path / f"m.{fmt}", fps=5, pingpong=True)
    assert path.is_file() and path.stat().st_size > 0
    if fmt == "mp4":
        count = sum(1 for _ in iio.imiter(path, plugin="pyav")) if _has_pyav() else None
        if count is None:
            import imageio.v2 as imageio

            count = imageio.get_reader(path).count_frames()
    else:
        with Image.open(path) as im:
            count = im.n_frames
    assert count == 4 + 2  # ping-pong adds the inner frames in reverse


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def test_animation_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="valid choices are: gif, mp4, webp"):
        write_animation(_frames(2), tmp_path / "m.avi")
