"""Archive heatmaps: one image per task archive, quality by cell, for MLflow.

Drawn with Pillow alone (no plotting stack in the worker image): each cell is a square,
empty cells grey, filled ones from dark blue (low quality) to yellow (high). Archives with
more than two descriptor dimensions are shown over their first two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["archive_image"]

_EMPTY = (200, 200, 200)
_LOW = (40, 30, 110)
_HIGH = (250, 220, 40)


def archive_image(archive: Mapping[str, Any], cell_pixels: int = 16) -> Any:
    """A PIL image of one archive in its `to_dict()` form."""
    from PIL import Image

    descriptors = list(archive["descriptors"])
    bins = [int(archive["binnings"][d]["bins"]) for d in descriptors[:2]] + [1, 1]
    rows, cols = bins[0], bins[1]
    image = Image.new("RGB", (cols * cell_pixels, rows * cell_pixels), _EMPTY)
    qualities = [float(e["quality"]) for e in archive["cells"].values()]
    low, high = (min(qualities), max(qualities)) if qualities else (0.0, 1.0)
    for key, elite in archive["cells"].items():
        index = [int(i) for i in key.split(",")] + [0, 0]
        row, col = rows - 1 - index[0], index[1]
        shade = _colour((float(elite["quality"]) - low) / (high - low) if high > low else 1.0)
        box = (col * cell_pixels, row * cell_pixels, (col + 1) * cell_pixels - 1,
               (row + 1) * cell_pixels - 1)
        image.paste(shade, box)
    return image


def _colour(t: float) -> tuple[int, int, int]:
    t = min(max(t, 0.0), 1.0)
    return tuple(round(a + (b - a) * t) for a, b in zip(_LOW, _HIGH, strict=True))  # type: ignore[return-value]
