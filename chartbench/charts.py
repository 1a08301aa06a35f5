"""Charts with known data, drawn with Pillow on a grid the vision tower can read.

The canvas is 56 x 56 units (the tiny model's input size), drawn `scale` times larger (224 px by
default, for people; the model's processor shrinks it back). It is four columns of 14 units, one per
bar or line point, so each bar lies under one column of 14-unit patches. A value v (1..MAX_VALUE)
is v half-patches high (7 units each): a patch is then empty, half or fully covered, which a tiny
vision tower tells apart quickly.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

CANVAS = 56          # units; the model's image size
COLUMN = 14          # one bar / point per column (the vision patch size)
UNIT = 7             # units per value step
MAX_VALUE = 8        # values are 1..MAX_VALUE
MAX_ITEMS = CANVAS // COLUMN  # 4 bars or points at most
MIN_ITEMS = 2
SCALE = 4            # pixels per unit in the saved PNG

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 90, 220),
    "green": (40, 170, 60),
    "orange": (250, 150, 20),
    "purple": (150, 60, 190),
}
KINDS = ("bar", "line")


@dataclass(frozen=True)
class Chart:
    """`kind` "bar": one bar per colour, left to right; "line": one line (colour colours[0]) through
    len(values) points. Values are distinct integers in 1..MAX_VALUE."""

    kind: str
    colours: tuple[str, ...]
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown chart kind {self.kind!r}")
        if not MIN_ITEMS <= len(self.values) <= MAX_ITEMS:
            raise ValueError(f"a chart has {MIN_ITEMS}..{MAX_ITEMS} values, got {len(self.values)}")
        if self.kind == "bar" and len(self.colours) != len(self.values):
            raise ValueError("a bar chart needs one colour per bar")
        if len(set(self.values)) != len(self.values) or not all(1 <= v <= MAX_VALUE for v in self.values):
            raise ValueError(f"values must be distinct integers in 1..{MAX_VALUE}: {self.values}")

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def line_colour(self) -> str:
        return self.colours[0]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "colours": list(self.colours), "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: dict) -> "Chart":
        return cls(d["kind"], tuple(d["colours"]), tuple(int(v) for v in d["values"]))


SPLITS = ("train", "test")
TEST_SHARE = 5  # one chart in 5 is a test chart


def split_of(chart: Chart) -> str:
    """"test" or "train", fixed per chart by a hash of its data: benchmarks draw test charts and
    training sets draw train charts, so a trained model is never scored on a chart it saw."""
    digest = hashlib.sha256(repr((chart.kind, chart.colours, chart.values)).encode()).digest()
    return "test" if digest[0] % TEST_SHARE == 0 else "train"


def random_chart(rng: random.Random, kind: str | None = None, split: str | None = None) -> Chart:
    """A random chart of `kind` (random if None) from `split` (either if None)."""
    if split not in (None, *SPLITS):
        raise ValueError(f"unknown split {split!r}")
    kind = kind or rng.choice(KINDS)
    while True:
        n = rng.randint(MIN_ITEMS if kind == "bar" else 3, MAX_ITEMS)
        values = tuple(rng.sample(range(1, MAX_VALUE + 1), n))
        colours = tuple(rng.sample(list(PALETTE), n if kind == "bar" else 1))
        chart = Chart(kind, colours, values)
        if split is None or split_of(chart) == split:
            return chart


def top(value: int) -> int:
    """The y unit where a value's bar ends (0 is the top of the canvas)."""
    return CANVAS - UNIT * value


def render(chart: Chart, scale: int = SCALE):
    """The chart as a PIL RGB image of (CANVAS * scale) px square."""
    from PIL import Image, ImageDraw

    s = scale
    im = Image.new("RGB", (CANVAS * s, CANVAS * s), "white")
    draw = ImageDraw.Draw(im)
    for y in range(CANVAS - 2 * UNIT, 0, -2 * UNIT):  # light grid every 2 values
        draw.line([(0, y * s), (CANVAS * s, y * s)], fill=(225, 225, 225), width=max(1, s // 4))
    if chart.kind == "bar":
        for j, (colour, v) in enumerate(zip(chart.colours, chart.values)):
            x0 = j * COLUMN + 2
            draw.rectangle([x0 * s, top(v) * s, (x0 + COLUMN - 4) * s - 1, CANVAS * s - 1], fill=PALETTE[colour])
    else:
        pts = [((j * COLUMN + COLUMN / 2) * s, (top(v) + UNIT / 2) * s) for j, v in enumerate(chart.values)]
        colour = PALETTE[chart.line_colour]
        draw.line(pts, fill=colour, width=2 * s)
        r = 3 * s
        for x, y in pts:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    draw.line([(0, CANVAS * s - 1), (CANVAS * s, CANVAS * s - 1)], fill=(90, 90, 90), width=max(1, s // 2))
    return im
