"""A small server-side SVG stacked bar chart: no script, no CDN, and every bar a link.

Colours and text are SVG attributes, never `style=`, so the strict Content-Security-Policy
(style-src 'self') has nothing to refuse. Every value goes through Markup.format, which
escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

WIDTH = 760
PLOT_TOP = 16
PLOT_HEIGHT = 190
LABEL_SPACE = 64
LEFT = 44
LEGEND_HEIGHT = 24
MAX_LABELS = 16


@dataclass(frozen=True)
class Series:
    """One stacked part of every bar: its name, its legend label and its colour."""

    name: str
    label: str
    colour: str


@dataclass(frozen=True)
class Bar:
    """One bar: its label and, per series name, a count and the page that lists it."""

    label: str
    counts: dict[str, int]
    links: dict[str, str]


def nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def _f(x: float) -> str:
    return f"{x:.1f}"


def _grid(top: int, width: int) -> list[Markup]:
    out = []
    for frac in (0, 0.5, 1):
        y = PLOT_TOP + PLOT_HEIGHT * (1 - frac)
        out.append(Markup('<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#d9dee5" '
                          'stroke-width="1"/>').format(LEFT, width - 8, _f(y), _f(y)))
        out.append(Markup('<text x="{}" y="{}" text-anchor="end" font-size="11" '
                          'fill="#5f6b7a">{}</text>').format(LEFT - 6, _f(y + 4),
                                                             f"{top * frac:g}"))
    return out


def _segments(bar: Bar, series: list[Series], x: float, width: float, top: int):
    y: float = PLOT_TOP + PLOT_HEIGHT
    for s in series:
        n = bar.counts.get(s.name, 0)
        if not n:
            continue
        h = PLOT_HEIGHT * n / top
        y -= h
        rect = Markup('<rect x="{}" y="{}" width="{}" height="{}" fill="{}" class="seg seg-{}" '
                      'data-count="{}"><title>{}: {} {}</title></rect>').format(
            _f(x), _f(y), _f(width), _f(h), s.colour, s.name, n, bar.label, s.label, n)
        link = bar.links.get(s.name)
        yield Markup('<a href="{}">{}</a>').format(link, rect) if link else rect


def _legend(series: list[Series], y: int) -> list[Markup]:
    out, x = [], LEFT
    for s in series:
        out.append(Markup('<rect x="{}" y="{}" width="12" height="12" fill="{}"/>'
                          '<text x="{}" y="{}" font-size="12" fill="#1d2430">{}</text>')
                   .format(x, y - 10, s.colour, x + 16, y, s.label))
        x += 30 + 8 * len(s.label)
    return out


def stacked_bars(title: str, series: list[Series], bars: list[Bar],
                 width: int = WIDTH) -> Markup:
    """An SVG stacked bar chart with a title; each segment links to the calls it counts.

    `width` is in the chart's own units: a narrower chart drawn in a narrower box keeps
    its text at the same size on screen.
    """
    height = PLOT_TOP + PLOT_HEIGHT + LABEL_SPACE + LEGEND_HEIGHT
    top = nice_top(max((sum(b.counts.values()) for b in bars), default=0))
    slot = (width - LEFT - 8) / max(1, len(bars))
    bar_width = max(2.0, min(48.0, slot * 0.7))
    out = [Markup('<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
                  'viewBox="0 0 {} {}" width="100%"><title>{}</title>').format(
        width, height, title)]
    out += _grid(top, width)
    every = max(1, round(len(bars) / MAX_LABELS))
    for i, bar in enumerate(bars):
        x = LEFT + slot * i + (slot - bar_width) / 2
        out += _segments(bar, series, x, bar_width, top)
        if i % every == 0:
            cx, ly = _f(x + bar_width / 2), _f(PLOT_TOP + PLOT_HEIGHT + 12)
            out.append(Markup('<text x="{}" y="{}" font-size="11" fill="#1d2430" '
                              'text-anchor="end" transform="rotate(-40 {} {})">{}</text>')
                       .format(cx, ly, cx, ly, bar.label))
    out += _legend(series, height - 8)
    out.append(Markup("</svg>"))
    return Markup("").join(out)
