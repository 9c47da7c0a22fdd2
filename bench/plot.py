"""A tiny pure-Python line-plot renderer (no matplotlib): an RGB canvas, lines, a 5x7 bitmap
font, and Relay's own PNG encoder (`relay.sim.png.encode_png`) for the file."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from relay.sim.png import encode_png

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GREY: Color = (200, 200, 200)
DARK: Color = (90, 90, 90)
BLUE: Color = (31, 119, 180)
ORANGE: Color = (230, 115, 0)
GREEN: Color = (44, 160, 44)

_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
}
FONT: dict[str, list[str]] = {c: rows.split() for c, rows in _GLYPHS.items()}


class Canvas:
    def __init__(self, width: int, height: int, background: Color = WHITE):
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def fill(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        for y in range(max(0, y0), min(self.height, y1)):
            for x in range(max(0, x0), min(self.width, x1)):
                self.dot(x, y, color)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 1,
             dash: int = 0) -> None:
        steps = max(1, int(max(abs(x1 - x0), abs(y1 - y0))))
        half = width // 2
        for i in range(steps + 1):
            if dash and (i // dash) % 2:
                continue
            x = round(x0 + (x1 - x0) * i / steps)
            y = round(y0 + (y1 - y0) * i / steps)
            for dx in range(-half, width - half):
                for dy in range(-half, width - half):
                    self.dot(x + dx, y + dy, color)

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 2) -> int:
        """Draw `text` with its top-left corner at (x, y); return the width used."""
        cursor = x
        for char in text.upper():
            glyph = FONT.get(char, FONT[" "])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit == "1":
                        self.fill(cursor + col * scale, y + row * scale,
                                  cursor + (col + 1) * scale, y + (row + 1) * scale, color)
            cursor += 6 * scale
        return cursor - x

    @staticmethod
    def text_width(text: str, scale: int = 2) -> int:
        return len(text) * 6 * scale

    def png(self) -> bytes:
        row = self.width * 3
        return encode_png(self.width, self.height,
                          (bytes(self.pixels[y * row : (y + 1) * row]) for y in range(self.height)))


def nice_ticks(high: float, count: int = 5) -> list[float]:
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return ticks


def _label(value: float) -> str:
    if value >= 1000 and value % 1000 == 0:
        return f"{value / 1000:g}K"
    return f"{value:g}" if value >= 10 or value == 0 else f"{value:.2g}"


@dataclass
class Series:
    name: str
    color: Color
    points: list[tuple[float, float]]
    width: int = 3
    dash: int = 0


def chart(canvas: Canvas, box: tuple[int, int, int, int], title: str, xlabel: str, ylabel: str,
          series: Sequence[Series]) -> None:
    left, top, right, bottom = box
    px0, py0, px1, py1 = left + 80, top + 92, right - 20, bottom - 60
    canvas.text(left + (right - left - canvas.text_width(title)) // 2, top + 8, title)
    xs = [x for s in series for x, _ in s.points if math.isfinite(x)]
    ys = [y for s in series for _, y in s.points if math.isfinite(y)]
    xticks = nice_ticks(max(xs, default=1.0))
    yticks = nice_ticks(max(ys, default=1.0) * 1.05)
    xmax, ymax = xticks[-1], yticks[-1]

    def to_px(x: float, y: float) -> tuple[float, float]:
        return px0 + (px1 - px0) * x / xmax, py1 - (py1 - py0) * y / ymax

    for tick in yticks:
        _, y = to_px(0, tick)
        canvas.line(px0, y, px1, y, GREY)
        label = _label(tick)
        canvas.text(px0 - 8 - canvas.text_width(label), round(y) - 7, label, DARK)
    for tick in xticks:
        x, _ = to_px(tick, 0)
        canvas.line(x, py1, x, py1 + 6, DARK)
        label = _label(tick)
        canvas.text(round(x) - canvas.text_width(label) // 2, py1 + 12, label, DARK)
    canvas.line(px0, py0, px0, py1, BLACK, 2)
    canvas.line(px0, py1, px1, py1, BLACK, 2)
    canvas.text(px0 + (px1 - px0 - canvas.text_width(xlabel)) // 2, bottom - 26, xlabel, DARK)
    canvas.text(left + 8, top + 8, ylabel, DARK)
    for s in series:
        points = [to_px(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]
        for (xa, ya), (xb, yb) in itertools.pairwise(points):
            canvas.line(xa, ya, xb, yb, s.color, s.width, s.dash)
        for x, y in points:
            canvas.fill(round(x) - 4, round(y) - 4, round(x) + 5, round(y) + 5, s.color)
    # legend: one row between the title and the plot area
    lx, ly = px0, top + 34
    for s in series:
        if lx + 38 + canvas.text_width(s.name) > px1:  # wrap to a second row
            lx, ly = px0, ly + 22
        canvas.line(lx, ly + 7, lx + 30, ly + 7, s.color, s.width, s.dash)
        lx += 38 + canvas.text(lx + 38, ly, s.name, s.color) + 24


def sweep_plot(path: Path, levels: dict[str, list[dict[str, float]]]) -> None:
    """Two panels against the number of open streams: probe latency (p50 dashed, p99 solid)
    and server RSS, one colour per target."""
    colors = {"Relay": BLUE, "nchan": ORANGE, "peer": GREEN}
    canvas = Canvas(1400, 560)
    latency: list[Series] = []
    memory: list[Series] = []
    for name, points in levels.items():
        color = colors.get(name, DARK)
        latency.append(Series(f"{name} p99", color, [(p["streams"], p["probe_p99_ms"]) for p in points]))
        latency.append(Series(f"{name} p50", color, [(p["streams"], p["probe_p50_ms"]) for p in points], 2, 6))
        memory.append(Series(name, color, [(p["streams"], p["rss_mb"]) for p in points]))
    chart(canvas, (0, 0, 700, 560), "UPDATE TO EVENT LATENCY", "OPEN STREAMS", "MS", latency)
    chart(canvas, (700, 0, 1400, 560), "SERVER MEMORY (RSS)", "OPEN STREAMS", "MB", memory)
    path.write_bytes(canvas.png())
