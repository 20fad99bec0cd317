"""The page as one server-rendered HTML document with inline SVG charts: no script, no CDN, nothing to
fetch (the api-server has no internet and the UI shows the page in an iframe). Every value is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote

from ml_cache.ui.view_model import (
    BUILD_DAG_ID,
    JANITOR_DAG_ID,
    ROLLOUT_DAG_ID,
    ArchView,
    CachePage,
    CostWeek,
    JanitorRow,
    StageRow,
    StartupPoint,
)
from ml_cache.validation.report import short_image

STAGE_NAMES = {"scheduled": "scheduled", "image_ready": "image ready", "container_started": "started",
               "containers_ready": "containers ready", "ready": "ready"}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem 1.5rem;color:#1f2937;font-size:14px}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:1.6rem;border-bottom:1px solid #d1d5db}
h3{font-size:1rem;margin-top:1.2rem}table{border-collapse:collapse;margin:.4rem 0}
td,th{border:1px solid #e5e7eb;padding:.2rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px}.msg{background:#fef3c7;border:1px solid #f59e0b;padding:.5rem;margin:.5rem 0}
.empty{color:#4b5563;font-style:italic}.ok{color:#047857}.bad{color:#b91c1c}
svg text{font-size:11px;fill:#374151}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dt{font-weight:600}dd{margin:0}
"""
CACHED, UNCACHED = "#2563eb", "#dc2626"


def render_page(page: CachePage, *, ui_base: str = "/") -> str:
    """The full HTML document. `ui_base` is the Airflow UI's base URL, for links to runs."""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>ML cache</title><style>{_STYLE}</style>"
             "</head><body><h1>ML container image cache</h1>",
             f"<p>As of {escape(page.generated_at)} (from the Asset events and the SSM metadata parameter)</p>"]
    if page.pipeline:
        parts.append(f"<p>Pipeline <code class=pipeline>{escape(page.pipeline)}</code> (the config's "
                     "<code>pipeline</code>: one deployment of the DAGs runs one pipeline)</p>")
    parts += [f'<div class=msg role=alert>{escape(message)}</div>' for message in page.messages]
    if page.empty:
        parts.append("<p class=empty id=nothing>Nothing published yet: the first successful run of "
                     f"<code>{BUILD_DAG_ID}</code> publishes a snapshot, and it appears here.</p>")
    for view in page.archs:
        parts.append(_arch(view, ui_base))
    parts.append(_history(page, ui_base))
    parts.append(_janitor(page.janitor, ui_base))
    parts.append(_cost(page.cost_weeks, page.cost_total))
    parts.append("</body></html>")
    return "".join(parts)


def _run_link(ui_base: str, dag_id: str, run_id: str | None) -> str:
    if not run_id:
        return "-"
    href = f"{ui_base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return f'<a href="{escape(href)}" target=_top>{escape(run_id)}</a>'


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= factor:
            return f"{value / factor:.2f} {unit}"
    return f"{value} B"


def _when(iso: str | None) -> str:
    """An ISO time to the minute (UTC, as Airflow stores it)."""
    return escape(iso[:16].replace("T", " ")) if iso else "-"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(max(0, int(seconds)), 86400)  # AWS's clock a little ahead of Airflow's: "0 h 0 min"
    return f"{days} d {rest // 3600} h" if days else f"{rest // 3600} h {rest % 3600 // 60} min"


def _arch(view: ArchView, ui_base: str) -> str:
    arch = escape(view.arch)
    parts = [f'<section id="arch-{arch}"><h2>Architecture {arch}</h2>']
    live = view.live
    if live is None:
        parts.append("<p class=empty>No snapshot published for this architecture.</p>")
    else:
        validated = ('<span class=ok>validated</span>' if live.validated
                     else '<span class=bad>not validated by a rollout yet</span>')
        fsr = ", ".join(f"{escape(zone)} ({escape(state)})" for zone, state in live.fsr) or "none"
        parts.append(
            "<h3>Live snapshot</h3><dl>"
            f'<dt>Snapshot</dt><dd><code class=snapshot-id>{escape(live.snapshot_id)}</code> '
            f"({escape(live.source)}), {validated}</dd>"
            f"<dt>Published</dt><dd>{_when(live.published_at)} UTC (age {_age(live.age_seconds)})</dd>"
            f"<dt>Build</dt><dd>{escape(live.mode or '-')}, run {_run_link(ui_base, BUILD_DAG_ID, live.build_run_id)}"
            f"</dd><dt>Rollout</dt><dd>{_run_link(ui_base, ROLLOUT_DAG_ID, live.rollout_run_id)}</dd>"
            f"<dt>Size</dt><dd>volume {live.volume_size_gib or '-'} GiB, used {_size(live.used_bytes)}, "
            f"snapshot full {_size(live.full_bytes)}, incremental {_size(live.incremental_bytes)}</dd>"
            f"<dt>FSR</dt><dd>{fsr}</dd></dl>"
            "<table class=images><tr><th>Image</th><th>Digest</th><th>Size</th></tr>"
            + "".join(f"<tr><td><code>{escape(image.ref)}</code></td><td><code class=digest>"
                      f"{escape(image.digest)}</code></td><td class=n>{_size(image.bytes)}</td></tr>"
                      for image in live.images)
            + "</table>")
    parts.append("<h3>Start-up: cached vs uncached</h3>")
    if view.startup:
        parts += [_startup_chart(image, points) for image, points in sorted(view.startup.items())]
    else:
        parts.append("<p class=empty>No validation yet: a rollout that passes validation records start-up times.</p>")
    if view.stages:
        parts.append(f"<h3>Stages of the latest validation ({_run_link(ui_base, ROLLOUT_DAG_ID, view.stages_run_id)})"
                     f"</h3>{_stages_chart(view.stages)}")
    parts.append("</section>")
    return "".join(parts)


def _scale(value: float, top: float, span: float) -> float:
    return 0.0 if top <= 0 else value / top * span


def _startup_chart(image: str, points: Sequence[StartupPoint]) -> str:
    """Seconds from pod creation to ready per rollout, cached (blue) and uncached (red), oldest left."""
    width, height, left, bottom = 640, 180, 48, 24
    values = [v for p in points for v in (p.cached_seconds, p.uncached_seconds) if v is not None]
    top = max(values, default=1.0) * 1.1 or 1.0
    step = (width - left - 10) / max(1, len(points) - 1)

    def series(attr: str, color: str, name: str) -> str:
        coords = [(left + i * step, height - bottom - _scale(getattr(p, attr), top, height - bottom - 10))
                  for i, p in enumerate(points) if getattr(p, attr) is not None]
        if not coords:
            return ""
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in coords)
        return f'<polyline class="{name}" fill="none" stroke="{color}" stroke-width="1.5" points="{line}"/>{dots}'

    axis = (f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#9ca3af"/>'
            f'<line x1="{left}" y1="0" x2="{left}" y2="{height - bottom}" stroke="#9ca3af"/>'
            f'<text x="2" y="12">{top:.1f} s</text><text x="2" y="{height - bottom}">0 s</text>'
            f'<text x="{left}" y="{height - 6}">{escape(points[0].time[:10])}</text>'
            f'<text x="{width - 70}" y="{height - 6}">{escape(points[-1].time[:10])}</text>')
    legend = (f'<text x="{width - 200}" y="12" style="fill:{CACHED}">cached</text>'
              f'<text x="{width - 140}" y="12" style="fill:{UNCACHED}">uncached</text>')
    label = escape(image)
    return (f'<figure><figcaption><code>{label}</code></figcaption>'
            f'<svg class="startup-chart" role="img" aria-label="start-up of {label}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{axis}{legend}{series("cached_seconds", CACHED, "cached")}'
            f'{series("uncached_seconds", UNCACHED, "uncached")}</svg></figure>')


def _stages_chart(rows: Sequence[StageRow]) -> str:
    """One bar per pod from creation to ready, with a tick at each stage (like ktime's timeline)."""
    width, row_height, left = 640, 26, 260
    top = max((v for row in rows for v in row.stages.values() if v is not None), default=1.0) or 1.0
    bars = []
    for i, row in enumerate(rows):
        y = i * row_height + 4
        end = row.stages.get("ready")
        color = UNCACHED if row.baseline or not row.cache_hit else CACHED
        short = "/".join(row.image.split("/")[-2:])  # repository tail and tag: the table below has the full ref
        label = escape(f"{short} ({'baseline' if row.baseline else _cache_word(row)})")
        bars.append(f'<text x="0" y="{y + 13}">{label}</text>')
        if end is not None:
            bars.append(f'<rect x="{left}" y="{y}" width="{_scale(end, top, width - left - 20):.1f}" height="16" '
                        f'fill="{color}" opacity="0.25"/>')
        for stage, seconds in row.stages.items():
            if seconds is None:
                continue
            x = left + _scale(seconds, top, width - left - 20)
            bars.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 16}" stroke="{color}">'
                        f"<title>{escape(STAGE_NAMES.get(stage, stage))}: {seconds:.3f} s</title></line>")
    height = len(rows) * row_height + 20
    table = ("<table><tr><th>Image</th><th>Node</th><th>Cache</th>"
             + "".join(f"<th>{escape(name)} (s)</th>" for name in STAGE_NAMES.values()) + "</tr>"
             + "".join(f"<tr><td><code>{escape(row.image)}</code></td><td>{escape(row.node)}</td>"
                       f"<td>{_cache_word(row)}</td>"
                       + "".join(f"<td class=n>{_seconds(row.stages.get(stage))}</td>" for stage in STAGE_NAMES)
                       + "</tr>" for row in rows) + "</table>")
    return (f'<svg class="stages-chart" role="img" aria-label="validation stages" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{"".join(bars)}<text x="{left}" y="{height - 2}">0 s</text>'
            f'<text x="{width - 60}" y="{height - 2}">{top:.1f} s</text></svg>{table}')


def _cache_word(row: StageRow) -> str:
    if row.baseline:
        return "baseline, image was on the node" if row.cache_hit else "uncached baseline"
    return {True: "hit", False: "miss", None: "unknown"}[row.cache_hit]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


HISTORY_SHOWN = 12  # newest builds in view; the rest of the year folds away


def _history(page: CachePage, ui_base: str) -> str:
    if not page.history:
        return "<h2>Builds</h2><p class=empty>No build has run yet.</p>"
    header = ("<tr><th>Started</th><th>Run</th><th>Arch</th><th>Outcome</th><th>Snapshot</th><th>Pulled</th>"
              "<th>Duration</th><th>Run cost</th><th>Cause</th></tr>")
    rows = [
        f"<tr><td>{_when(row.time)}</td><td>{_run_link(ui_base, BUILD_DAG_ID, row.run_id)}</td>"
        f"<td>{escape(row.arch or '-')}</td><td>{escape(row.outcome)}</td>"
        f"<td><code>{escape(row.snapshot_id or '-')}</code></td><td class=n>{_size(row.bytes_pulled)}</td>"
        f"<td class=n>{'-' if row.duration_seconds is None else f'{row.duration_seconds / 60:.1f} min'}</td>"
        f"<td class=n>{'-' if row.run_usd is None else f'${row.run_usd:,.2f}'}</td>"
        f"<td>{escape(row.cause or '')}</td></tr>" for row in page.history]
    html = f"<h2>Builds</h2><table class=history>{header}{''.join(rows[:HISTORY_SHOWN])}</table>"
    if len(rows) > HISTORY_SHOWN:
        html += (f"<details><summary>{len(rows) - HISTORY_SHOWN} older builds</summary>"
                 f"<table class=history>{header}{''.join(rows[HISTORY_SHOWN:])}</table></details>")
    return html


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _janitor_actions(row: JanitorRow) -> str:
    if row.dry_run is None:
        return "no report"
    if not row.actions:
        return f"nothing to do ({row.kept} kept)"
    items = "".join(f"<li>{escape(a.action)} <code>{escape(a.resource)}</code>: {escape(a.outcome)} "
                    f"({_money(a.monthly_savings_usd)}/month)<br><small>{escape(a.reason)}</small></li>"
                    for a in row.actions)
    return f"<ul>{items}</ul>{row.kept} kept"


def _janitor(rows: Sequence[JanitorRow], ui_base: str) -> str:
    """The janitor's runs from their `report_cleanup` XCom: a dry run's actions are would-be actions."""
    if not rows:
        return f"<h2>Janitor</h2><p class=empty>No janitor run yet (<code>{JANITOR_DAG_ID}</code>).</p>"
    header = ("<tr><th>Started</th><th>Run</th><th>State</th><th>Mode</th><th>Actions</th>"
              "<th>Saved per month</th><th>Cause</th></tr>")
    html_rows = [
        f"<tr><td>{_when(row.time)}</td><td>{_run_link(ui_base, JANITOR_DAG_ID, row.run_id)}</td>"
        f"<td>{escape(row.state)}</td>"
        f"<td>{'-' if row.dry_run is None else ('dry run: nothing changed' if row.dry_run else 'applied')}</td>"
        f"<td>{_janitor_actions(row)}</td>"
        f"<td class=n>{_money(row.monthly_savings_usd)}{' (would be)' if row.dry_run else ''}</td>"
        f"<td>{escape(row.cause or '')}</td></tr>" for row in rows]
    html = f"<h2>Janitor</h2><table class=janitor>{header}{''.join(html_rows[:HISTORY_SHOWN])}</table>"
    if len(html_rows) > HISTORY_SHOWN:
        html += (f"<details><summary>{len(html_rows) - HISTORY_SHOWN} older janitor runs</summary>"
                 f"<table class=janitor>{header}{''.join(html_rows[HISTORY_SHOWN:])}</table></details>")
    return html


def _cost(weeks: Sequence[CostWeek], total: dict | None) -> str:
    if not weeks or total is None:
        return "<h2>Cost</h2><p class=empty>No cost reported yet (builds report it when they publish).</p>"
    width, height, bottom = 640, 140, 20
    top = max(week.usd for week in weeks) or 1.0
    bar = min(40.0, (width - 10) / len(weeks))
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - bottom - _scale(week.usd, top, height - bottom - 10):.1f}" '
        f'width="{max(1.0, bar - 2):.1f}" height="{_scale(week.usd, top, height - bottom - 10):.1f}" fill="#6b7280">'
        f"<title>week of {escape(week.week)}: ${week.usd:,.2f}</title></rect>" for i, week in enumerate(weeks))
    chart = (f'<svg class="cost-chart" role="img" aria-label="cost per week" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">{bars}<text x="0" y="{height - 4}">{escape(weeks[0].week)}</text>'
             f'<text x="{width - 70}" y="{height - 4}">{escape(weeks[-1].week)}</text>'
             f'<text x="0" y="12">${top:,.2f}</text></svg>')
    recent = "".join(f"<tr><td>{escape(w.week)}</td><td class=n>${w.usd:,.2f}</td>"
                     f"<td class=n>${w.builder_usd:,.2f}</td><td class=n>${w.fsr_usd:,.2f}</td>"
                     f"<td class=n>${w.snapshot_usd:,.2f}</td></tr>"
                     for w in reversed(weeks[-8:]))
    return ("<h2>Cost</h2>"
            f"<p id=cost-total>Total ${total.get('usd', 0):,.2f} over {total.get('runs', '?')} build(s) since "
            f"{escape(str(total.get('since', '-')))}: builder {total.get('builder_hours', 0):.2f} h "
            f"(${total.get('builder_usd', 0):,.2f}), FSR {total.get('fsr_az_hours', 0):.1f} AZ-hours "
            f"(${total.get('fsr_usd', 0):,.2f}), snapshot storage ${total.get('snapshot_usd', 0):,.2f} "
            "(counted up to the newest build)</p>"
            f"{chart}<table class=cost><tr><th>Week of</th><th>Total</th><th>Builder</th><th>FSR</th><th>Storage</th>"
            f"</tr>{recent}</table>")


CARD_WIDTH = 300  # the UI draws a description's Markdown image at most 300 px wide
CARD_LINE_HEIGHT = 15
CARD_CHARS = 44  # of 11 px monospace in CARD_WIDTH
INDENT = "  "  # a line drawn indented (SVG collapses leading spaces)


def _card_line(text: str) -> str:
    return text if len(text) <= CARD_CHARS else text[:CARD_CHARS - 1] + "…"


def render_published_card(page: CachePage) -> str:
    """The published image set as a small SVG, for the build's trigger form: a Markdown image there, which the
    browser fetches when the form opens (the DAG file reads nothing). The same view model as the page:
    the SSM metadata parameter, or a message saying why it could not be read. Short refs (the full ones are the
    form's own value and the page's)."""
    lines: list[tuple[str, bool]] = []  # (text, bold)
    for message in page.messages:
        lines += [(message[start:start + CARD_CHARS], False) for start in range(0, min(len(message), 4 * CARD_CHARS),
                                                                                 CARD_CHARS)]
    for view in page.archs:
        live = view.live
        if live is None or live.source != "SSM metadata parameter":
            continue
        lines += [(f"Published now: {live.snapshot_id}", True),
                  (f"{view.arch}, {_age(live.age_seconds)} old{', validated' if live.validated else ''}", False)]
        for image in live.images:
            lines += [(f"{short_image(image.ref.partition('@')[0])}", False),
                      (f"{INDENT}{image.digest[:15]}…  {_size(image.bytes)}", False)]
    if not lines:
        lines += [("Nothing published yet: the first", True), ("successful build publishes the image set.", True)]
    height = CARD_LINE_HEIGHT * len(lines) + 8
    weight = {True: ' font-weight="bold"', False: ""}
    rows = "".join(f'<text x="{18 if text.startswith(INDENT) else 6}" y="{CARD_LINE_HEIGHT * (index + 1)}"'
                   f'{weight[bold]}>{escape(_card_line(text.strip()))}</text>'
                   for index, (text, bold) in enumerate(lines))
    label = escape("; ".join(text.strip() for text, _ in lines))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}" width="{CARD_WIDTH}" '
            f'height="{height}" font-family="monospace" font-size="11"><title>{label}</title>'
            f'<rect width="100%" height="100%" fill="#f6f8fa" stroke="#d0d7de"/>{rows}</svg>')
