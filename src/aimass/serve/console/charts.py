"""Small charts drawn on the server as SVG: no JavaScript, no chart library.

:func:`usage_chart` turns :func:`aimass.serve.metering.series` (requests per key per hour) into what
``_usage_chart.html`` draws: one polyline per key, scaled into a fixed view box, with the peak and
the first and last hour as labels. The table under the chart holds the same numbers as text.

>>> chart = usage_chart({"hours": ["2026-12-03T10:00", "2026-12-03T11:00"], "keys": {"k1": [0, 4]}})
>>> chart["peak"], chart["lines"][0]["points"]
(4, '40.0,170.0 620.0,20.0')
"""

from __future__ import annotations

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 20, 20, 30
# Okabe-Ito colours: told apart with the common colour-vision deficiencies, dark enough on white
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C6D31")
MAX_LINES = len(COLOURS)


def usage_chart(series: dict) -> dict | None:
    """The chart's lines, labels and view box; None when no key made a request in the window.
    The busiest :data:`MAX_LINES` keys get a line each (the table lists every key)."""
    hours, keys = series["hours"], series["keys"]
    if not hours or not any(any(counts) for counts in keys.values()):
        return None
    busiest = sorted(keys, key=lambda k: (-sum(keys[k]), k))[:MAX_LINES]
    peak = max(max(keys[k]) for k in busiest)
    step = (WIDTH - LEFT - RIGHT) / max(len(hours) - 1, 1)
    lines = []
    for colour, key in zip(COLOURS, busiest):
        points = " ".join(f"{LEFT + i * step:.1f},{_y(count, peak):.1f}" for i, count in enumerate(keys[key]))
        lines.append({"key": key, "colour": colour, "points": points, "total": sum(keys[key])})
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "peak": peak,
        "first": hours[0],
        "last": hours[-1],
        "lines": lines,
        "hidden": len(keys) - len(busiest),
    }


def _y(count: int, peak: int) -> float:
    return HEIGHT - BOTTOM - (HEIGHT - BOTTOM - TOP) * count / peak
