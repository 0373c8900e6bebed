"""Server-rendered SVG charts for the dashboard: no JavaScript library, no CDN. Every number is escaped."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 720, 170, 40, 22, 12


def _frame(title: str, top_label: str, labels: Sequence[str], body: SafeString, chart_id: str) -> SafeString:
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    step = (WIDTH - PAD_LEFT) / max(1, len(labels))
    ticks = format_html_join(
        "", '<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#666">{}</text>',
        ((round(PAD_LEFT + step * (i + 0.5), 1), HEIGHT - 6, label) for i, label in enumerate(labels) if i % 3 == 0),
    )
    return format_html(
        '<svg id="{}" class="ops-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="100%" '
        'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">'
        '<title>{}</title>'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#eee"/>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#666">{}</text>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#666">0</text>'
        "{}{}</svg>",
        chart_id, title, WIDTH, HEIGHT, title,
        PAD_LEFT, PAD_TOP + plot_h, WIDTH, PAD_TOP + plot_h,
        PAD_LEFT, PAD_TOP, WIDTH, PAD_TOP,
        PAD_LEFT - 4, PAD_TOP + 4, top_label,
        PAD_LEFT - 4, PAD_TOP + plot_h,
        body, ticks,
    )


def bar_chart(values: Sequence[int], labels: Sequence[str], *, title: str, chart_id: str,
              colour: str = "#417690") -> SafeString:
    """Vertical bars, one per value; the y axis runs from 0 to the largest value."""
    top = max(values) if values and max(values) > 0 else 1
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    step = (WIDTH - PAD_LEFT) / max(1, len(values))
    bars = format_html_join("", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" data-value="{}">'
                                "<title>{}: {}</title></rect>", (
        (round(PAD_LEFT + step * i + 1, 1), round(PAD_TOP + plot_h - plot_h * v / top, 1),
         round(max(1.0, step - 2), 1), round(plot_h * v / top, 1), colour, v, labels[i], v)
        for i, v in enumerate(values)
    ))
    return _frame(title, str(top), labels, bars, chart_id)


def rate_chart(rates: Sequence[float | None], labels: Sequence[str], *, title: str, chart_id: str) -> SafeString:
    """A 0-100 % line with a dot per hour that had data (hours without data leave a gap)."""
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    step = (WIDTH - PAD_LEFT) / max(1, len(rates))
    points = [
        (round(PAD_LEFT + step * (i + 0.5), 1), round(PAD_TOP + plot_h - plot_h * r, 1), labels[i], round(100 * r))
        for i, r in enumerate(rates) if r is not None
    ]
    line = SafeString("")
    if len(points) > 1:
        line = format_html('<polyline fill="none" stroke="#ba2121" stroke-width="2" points="{}"/>',
                           " ".join(f"{x},{y}" for x, y, _, _ in points))
    dots = format_html_join("", '<circle cx="{}" cy="{}" r="3" fill="#ba2121" data-value="{}">'
                                "<title>{}: {} %</title></circle>", (
        (x, y, pct, label, pct) for x, y, label, pct in points))
    return _frame(title, "100 %", labels, format_html("{}{}", line, dots), chart_id)
