"""Plotly figures from :mod:`tuner.report.data`, and the one self-contained HTML page.

plotly.js is inlined once in the page head, so the file opens offline (no CDN); each figure is
a ``div.tuner-figure`` holding one plotly graph.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tuner.report.data import (
    ConfirmRow,
    ConfirmView,
    Curves,
    FreezeView,
    History,
    Importances,
    Parallel,
    ParetoView,
    Report,
    Summary,
    TrialBrief,
)

BLUE, ORANGE, GREY, RED, GREEN = "#1f77b4", "#ff7f0e", "#9a9a9a", "#d62728", "#2ca02c"
FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
STYLE = f"""
body {{ font-family: {FONT}; margin: 24px auto; max-width: 1200px; color: #222; padding: 0 16px; }}
h1 {{ font-size: 1.6em; margin-bottom: 0.2em; }}
h2 {{ font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }}
p.meta, p.note {{ color: #555; font-size: 0.9em; }}
table.summary {{ border-collapse: collapse; font-size: 0.92em; }}
table.summary th {{ text-align: left; font-weight: 600; padding: 4px 16px 4px 0;
  vertical-align: top; white-space: nowrap; }}
table.summary td {{ padding: 4px 0; }}
table.summary tr {{ border-bottom: 1px solid #eee; }}
code {{ background: #f4f4f4; padding: 1px 4px; border-radius: 3px; font-size: 0.95em; }}
div.tuner-figure {{ margin: 8px 0 16px; }}
"""


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def _freeze_label(freeze: Any) -> str:
    return "n/a" if freeze is None else str(freeze)


def _layout(fig: go.Figure, title: str, height: int, **kwargs: Any) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"}, height=height, template="plotly_white",
        margin={"l": 60, "r": 30, "t": 60, "b": 50}, font={"family": FONT},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        **kwargs,
    )
    return fig


# -- figures ---------------------------------------------------------------------------------


def history_figure(history: History) -> go.Figure:
    """Primary metric per trial, baseline starred, pruned trials greyed, best-so-far line."""
    fig = go.Figure()
    complete = [p for p in history.points if p.state == "COMPLETE" and not p.baseline]
    pruned = [p for p in history.points if p.state == "PRUNED"]
    fig.add_trace(go.Scatter(
        x=[p.number for p in complete], y=[p.value for p in complete], mode="markers",
        name="complete", marker={"color": BLUE, "size": 8},
        hovertext=[f"trial #{p.number}, freeze {_freeze_label(p.freeze)}" for p in complete],
    ))
    if pruned:
        fig.add_trace(go.Scatter(
            x=[p.number for p in pruned], y=[p.value for p in pruned], mode="markers",
            name="pruned (last reported value)",
            marker={"color": GREY, "size": 8, "symbol": "x"},
            hovertext=[f"trial #{p.number} (pruned), freeze {_freeze_label(p.freeze)}"
                       for p in pruned],
        ))
    base = history.baseline
    if base is not None:
        fig.add_trace(go.Scatter(
            x=[base.number], y=[base.value], mode="markers+text", name="baseline",
            marker={"color": ORANGE, "size": 16, "symbol": "star",
                    "line": {"color": "#333", "width": 1}},
            text=["baseline"], textposition="middle right",
            hovertext=[f"baseline trial #{base.number}, freeze {_freeze_label(base.freeze)}"],
        ))
    if history.best_so_far:
        fig.add_trace(go.Scatter(
            x=[n for n, _ in history.best_so_far], y=[v for _, v in history.best_so_far],
            mode="lines", name="best so far", line={"color": GREEN, "shape": "hv", "width": 2},
        ))
    return _layout(fig, f"Optimization history: {history.metric} ({history.direction})", 420,
                   xaxis_title="trial", yaxis_title=history.metric)


def curves_figure(curves: Curves) -> go.Figure:
    """Every trial's learning curve; pruned ones dashed and ended with a cross."""
    fig = go.Figure()
    seen: set[str] = set()
    styles = {
        "COMPLETE": ("complete", {"color": BLUE, "width": 1.5}),
        "PRUNED": ("pruned (cut where stopped)", {"color": GREY, "width": 1.2, "dash": "dash"}),
        "FAIL": ("failed", {"color": RED, "width": 1.2, "dash": "dot"}),
        "DIVERGED": ("diverged (NaN/inf loss next)", {"color": RED, "width": 1.2, "dash": "dash"}),
    }
    for c in curves.curves:
        group, line = styles.get(c.state, styles["COMPLETE"])
        if c.baseline:
            group, line = "baseline", {"color": ORANGE, "width": 3}
        x = [e + 1 for e in c.epochs]  # epochs shown 1-based, as training logs count them
        fig.add_trace(go.Scatter(
            x=x, y=list(c.values), mode="lines", name=group, legendgroup=group,
            showlegend=group not in seen, line=line, opacity=0.85,
            hovertemplate=f"trial #{c.number} ({c.state.lower()}), freeze "
                          f"{_freeze_label(c.freeze)}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>",
        ))
        seen.add(group)
        if c.pruned:
            fig.add_trace(go.Scatter(
                x=[x[-1]], y=[c.values[-1]], mode="markers", name="pruned here",
                legendgroup="cut", showlegend="cut" not in seen,
                marker={"color": RED, "symbol": "x", "size": 8},
                hovertemplate=f"trial #{c.number} pruned after epoch %{{x}}<extra></extra>",
            ))
            seen.add("cut")
    xaxis: dict[str, Any] = {"title": "epoch"}
    if (curves.max_epochs or 0) <= 20:
        xaxis["dtick"] = 1
    if curves.max_epochs:
        xaxis["range"] = [0.8, curves.max_epochs + 0.2]
    return _layout(fig, f"Learning curves: {curves.metric} per epoch", 460, xaxis=xaxis,
                   yaxis_title=curves.metric)


def importances_figure(imp: Importances) -> go.Figure:
    """Horizontal bars, one group per objective, most important parameter on top."""
    fig = go.Figure()
    params = list(next(iter(imp.by_objective.values())))
    colors = [BLUE, ORANGE, GREEN, RED]
    for i, (metric, values) in enumerate(imp.by_objective.items()):
        fig.add_trace(go.Bar(
            x=[values.get(p, 0.0) for p in params], y=params, orientation="h", name=metric,
            marker_color=colors[i % len(colors)],
            hovertemplate="%{y}: %{x:.3f}<extra>" + html.escape(metric) + "</extra>",
        ))
    return _layout(
        fig, f"Parameter importances ({imp.method}, {imp.n_trials} complete trials)",
        120 + 28 * len(params) * max(1, len(imp.by_objective)), barmode="group",
        xaxis={"title": "importance (sums to 1 per objective)", "rangemode": "tozero"},
        yaxis={"autorange": "reversed"}, showlegend=len(imp.by_objective) > 1,
    )


def _dimension(axis: Any) -> dict[str, Any]:
    """A parcoords dimension; absent values (conditional parameters) get their own tick."""
    present = [v for v in axis.values if v is not None]
    missing = len(present) < len(axis.values)
    if axis.kind == "categorical":
        choices = list(axis.choices)
        index = {repr(c): i for i, c in enumerate(choices)}
        values = [index.get(repr(v), len(choices)) if v is not None else len(choices)
                  for v in axis.values]
        ticktext = [str(c) for c in choices] + (["(absent)"] if missing else [])
        return {"label": axis.name, "values": values, "tickvals": list(range(len(ticktext))),
                "ticktext": ticktext, "range": [-0.2, len(ticktext) - 0.8]}
    log = axis.log and all(v > 0 for v in present)
    scaled = [math.log10(v) if log else float(v) for v in present]
    lo, hi = (min(scaled), max(scaled)) if scaled else (0.0, 1.0)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    if not log and not missing:
        return {"label": axis.name, "values": scaled, "range": [lo, hi]}
    # parcoords has no log axis and no gap for "absent": place both on explicit ticks
    absent = lo - 0.12 * (hi - lo)
    ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    ticktext = [_fmt(10**t if log else t, 3) for t in ticks]
    values, it = [], iter(scaled)
    for v in axis.values:
        values.append(absent if v is None else next(it))
    if missing:
        ticks, ticktext = [absent, *ticks], ["(absent)", *ticktext]
    label = f"{axis.name} (log)" if log else axis.name
    return {"label": label, "values": values, "tickvals": ticks, "ticktext": ticktext,
            "range": [absent if missing else lo, hi]}


def parallel_figure(par: Parallel) -> go.Figure:
    """Parameters and objectives of the complete trials, coloured by the primary metric."""
    fig = go.Figure(go.Parcoords(
        dimensions=[_dimension(a) for a in par.axes],
        line={"color": list(par.color), "colorscale": "Viridis", "showscale": True,
              "reversescale": par.direction == "minimize",
              "colorbar": {"title": {"text": par.color_metric}}},
        labelangle=0,
    ))
    fig = _layout(fig, f"Parallel coordinates ({len(par.numbers)} complete trials; "
                       f"colour: {par.color_metric})", 460)
    fig.update_layout(margin={"l": 70, "r": 70, "t": 110, "b": 40})
    return fig


def freeze_figure(view: FreezeView) -> go.Figure:
    """Box and strip per freeze index: metric, seconds per epoch and peak memory."""
    titles = [f"{view.metric} (complete trials)", "train seconds per epoch (complete + pruned)"]
    if view.has_memory:
        titles.append("peak memory, MB")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.07)
    labels = [str(g.freeze) for g in view.groups]
    columns = [("value", BLUE), ("seconds_per_epoch", ORANGE), ("peak_memory_mb", GREEN)]
    for col, (attr, color) in enumerate(columns[:len(titles)], start=1):
        xs, ys, texts = [], [], []
        for g in view.groups:
            for s in g.samples:
                if getattr(s, attr) is None:
                    continue
                xs.append(str(g.freeze))
                ys.append(getattr(s, attr))
                texts.append(f"trial #{s.number} ({s.state.lower()})")
        fig.add_trace(go.Box(
            x=xs, y=ys, boxpoints="all", jitter=0.35, pointpos=0, marker={"color": color,
            "size": 6, "opacity": 0.8}, line={"color": color}, fillcolor="rgba(0,0,0,0)",
            hovertext=texts, name=titles[col - 1], showlegend=False,
        ), row=1, col=col)
        fig.update_xaxes(title_text="freeze index", type="category", categoryorder="array",
                         categoryarray=labels, row=1, col=col)
    fig = _layout(fig, "Freeze view: what freezing buys and costs", 440)
    fig.update_layout(margin={"t": 90})
    return fig


def pareto_figure(view: ParetoView) -> go.Figure:
    """Metric against cost; the front drawn as a staircase, points labelled trial and freeze."""
    fig = go.Figure()
    labelled = {p.number for p in view.labelled}
    ints = all(isinstance(p.freeze, int) for p in view.points)
    others = [p for p in view.points if not p.on_front]
    front = view.front
    marker: dict[str, Any] = {"size": 9, "opacity": 0.55, "color": GREY}
    if ints and view.points:
        freezes = [p.freeze for p in view.points]
        marker.update(color=[p.freeze for p in others], colorscale="Viridis", cmin=min(freezes),
                      cmax=max(freezes) if max(freezes) > min(freezes) else min(freezes) + 1)
    if others:
        fig.add_trace(go.Scatter(
            x=[p.cost for p in others], y=[p.metric for p in others], mode="markers+text",
            name="dominated", marker=marker, textposition="top center",
            text=[p.label if p.number in labelled else "" for p in others],
            textfont={"size": 10, "color": "#666"},
            hovertext=[f"trial {p.label}" for p in others],
        ))
    front_marker: dict[str, Any] = {"size": 13, "line": {"color": "#111", "width": 1.5},
                                    "color": RED}
    if ints and view.points:
        front_marker.update(color=[p.freeze for p in front], colorscale="Viridis",
                            cmin=marker["cmin"], cmax=marker["cmax"], showscale=True,
                            colorbar={"title": {"text": "freeze"}})
    fig.add_trace(go.Scatter(
        x=[p.cost for p in front], y=[p.metric for p in front], mode="lines+markers+text",
        name="Pareto front", line={"color": RED, "shape": "hv", "width": 2},
        marker=front_marker, text=[p.label for p in front], textposition="top left",
        textfont={"size": 11, "color": "#111"}, hovertext=[f"trial {p.label}" for p in front],
    ))
    base = next((p for p in view.points if p.baseline), None)
    if base is not None:
        fig.add_trace(go.Scatter(
            x=[base.cost], y=[base.metric], mode="markers", name="baseline",
            marker={"color": ORANGE, "size": 18, "symbol": "star-open", "line": {"width": 2}},
            hovertext=[f"baseline trial {base.label}"],
        ))
    better = "higher" if view.direction == "maximize" else "lower"
    return _layout(
        fig, f"{view.metric} ({better} is better) vs {view.cost_label} (lower is better): "
             f"{len(front)} of {len(view.points)} trials on the front", 480,
        xaxis_title=view.cost_label, yaxis_title=view.metric,
    )


def _confirm_label(row: ConfirmRow) -> str:
    """``#12 (picked, 1 failed)``: a trial's category on the confirmation figure."""
    notes = [n for n, on in (("picked", row.picked), ("baseline", row.baseline)) if on]
    if row.n_failed:
        notes.append(f"{row.n_failed} failed")
    return f"#{row.number}" + (f" ({', '.join(notes)})" if notes else "")


def confirm_figure(view: ConfirmView) -> go.Figure:
    """Each confirmed trial's search value next to its fresh-seed runs and their mean.

    The gap between the orange diamond and the blue dots is the winner's curse made visible.
    """
    labels = [_confirm_label(r) for r in view.rows]
    fig = go.Figure()
    xs, ys, seeds = [], [], []
    for label, row in zip(labels, view.rows):
        for seed, value in row.runs:
            if value is not None:
                xs.append(label)
                ys.append(value)
                seeds.append(seed)
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", name="fresh seed", customdata=seeds,
        marker={"color": BLUE, "size": 9, "opacity": 0.8},
        hovertemplate="%{x}<br>seed %{customdata}: %{y:.4g}<extra></extra>",
    ))
    means = [(label, r) for label, r in zip(labels, view.rows) if r.mean is not None]
    fig.add_trace(go.Scatter(
        x=[label for label, _ in means], y=[r.mean for _, r in means], mode="markers",
        name="fresh mean ± std",
        error_y={"type": "data", "array": [r.std or 0.0 for _, r in means], "color": "#333"},
        marker={"symbol": "line-ew-open", "size": 28, "color": "#333", "line": {"width": 2}},
        hovertemplate="%{x}<br>mean %{y:.4g}<extra></extra>",
    ))
    searched = [(label, r) for label, r in zip(labels, view.rows) if r.search_value is not None]
    fig.add_trace(go.Scatter(
        x=[label for label, _ in searched], y=[r.search_value for _, r in searched],
        mode="markers", name="search value",
        marker={"symbol": "diamond", "size": 11, "color": ORANGE},
        hovertemplate="%{x}<br>search %{y:.4g}<extra></extra>",
    ))
    return _layout(fig, f"{view.metric} on fresh trainer seeds"
                   f" {', '.join(map(str, view.seeds))}{view.scoring}", 420,
                   xaxis={"title": "confirmed trial", "type": "category"},
                   yaxis={"title": f"{view.metric} ({view.direction})"})


def confirm_note(view: ConfirmView) -> str:
    """One line: seeds, length, progress, the pick, its gain over the baseline, whether the
    default export takes it, and the runs on record at other lengths."""
    from tuner.confirm import other_lengths_text

    other = other_lengths_text(view.other_lengths)
    return _confirm_pick_note(view) + (f"; {other}" if other else "")


def _confirm_pick_note(view: ConfirmView) -> str:
    """:func:`confirm_note` without the other lengths."""
    text = (f"trainer seeds {', '.join(map(str, view.seeds))}{view.scoring}, "
            f"{view.n_done}/{view.n_runs} runs")
    if view.n_done < view.n_runs:
        text += " (unfinished: `tuner confirm` resumes; the export takes the best metric)"
    pick = view.picked
    if pick is None:
        return text + ("; no run finished yet" if not view.n_done else "; no run succeeded")
    text += f"; picked trial {pick.number}: mean {_fmt(pick.mean)}"
    if pick.std is not None:
        text += f" ± {_fmt(pick.std, 2)}"
    base = next((r for r in view.rows if r.baseline), None)
    if base is not None and base is not pick:
        text += f" vs baseline (trial {base.number}) {_fmt(base.mean)}"
    if view.gain is not None and base is not pick:
        text += f", gain {view.gain:+.4g}"
    elif base is pick:
        text += " (the baseline: no trial beat it on fresh seeds)"
    confirmed = {r.number for r in view.rows}
    if view.n_done == view.n_runs and not view.exported and view.best_number not in confirmed:
        text += (f"; stale: trial {view.best_number} finished later and beat every confirmed "
                 "trial, so the export takes it until `tuner confirm` runs again")
    return text


# -- summary table ---------------------------------------------------------------------------


def _trial_text(trial: TrialBrief | None, metrics: tuple[str, ...]) -> str:
    if trial is None:
        return "n/a"
    values = ", ".join(f"{m} {_fmt(v, 6)}" for m, v in zip(metrics, trial.values))
    params = " ".join(
        f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in trial.params.items()
    )
    extra = []
    if trial.freeze is not None and "freeze" not in trial.params:
        extra.append(f"freeze {trial.freeze}")
    if trial.train_seconds is not None:
        extra.append(f"{_fmt(trial.train_seconds)} s training")
    tail = f" ({'; '.join(extra)})" if extra else ""
    return f"trial <b>#{trial.number}</b>: {html.escape(values)}{html.escape(tail)}" + (
        f"<br><code>{html.escape(params)}</code>" if params else ""
    )


def summary_rows(summary: Summary, importances_note: str = "") -> list[tuple[str, str]]:
    """(header, HTML cell) rows of the summary table."""
    info = summary.info
    objective = ", ".join(f"{m} ({d})" for m, d in zip(info.metrics, info.directions))
    states = ", ".join(
        f"{s.lower()} {n}" + (f" ({summary.n_diverged} of them diverged)"
                              if s == "PRUNED" and summary.n_diverged else "")
        for s, n in summary.by_state.items()
    ) or "none"
    rows = [
        ("study", html.escape(info.name)),
        ("objective", html.escape(objective)),
        ("trials", html.escape(f"{summary.n_trials}: {states}")),
        ("best trial" + (f" ({info.metric} on the Pareto front)" if info.is_multi else ""),
         _trial_text(summary.best, info.metrics)),
    ]
    if info.is_multi:
        rows.append(("knee (default export)", _trial_text(summary.knee, info.metrics)))
    if summary.baseline is not None:
        rows.append(("baseline", _trial_text(summary.baseline, info.metrics)))
        rows.append((f"gain over baseline ({info.metric})", html.escape(f"{summary.gain:+.6g}")))
    else:
        rows.append(("baseline", "not in this study"))
    rows.append(("compute spent", html.escape(
        f"{summary.n_epochs_run} epochs, {_fmt(summary.train_seconds)} s training "
        f"({_fmt(summary.wall_seconds)} s wall, set-up included)"
    )))
    if not summary.n_pruned:
        saved = "nothing: no trial was pruned" + (
            " (Optuna cannot prune multi-objective trials)" if info.is_multi else ""
        )
    elif info.max_epochs:
        saved = (
            f"{summary.n_epochs_saved} of {summary.n_epochs_full} epochs "
            f"({summary.saved_fraction:.0%}) not run by {summary.n_pruned} pruned trials "
            f"(vs every finished trial trained to epoch {info.max_epochs})"
        )
        if summary.seconds_saved is not None and summary.n_epochs_saved:
            saved += f", about {_fmt(summary.seconds_saved)} s at each trial's own s/epoch"
    else:
        saved = "unknown (no trial recorded its epochs)"
    rows.append(("saved by pruning", html.escape(saved)))
    if importances_note:
        rows.append(("importances", html.escape(importances_note)))
    if info.space_file:
        rows.append(("space file", f"<code>{html.escape(info.space_file)}</code>"))
    if info.command:
        rows.append(("command", f"<code>{html.escape(info.command)}</code>"))
    return rows


def summary_table(summary: Summary, importances_note: str = "") -> str:
    """The summary as an HTML table."""
    body = "".join(f"<tr><th>{h}</th><td>{c}</td></tr>"
                   for h, c in summary_rows(summary, importances_note))
    return f'<table class="summary">{body}</table>'


# -- page ------------------------------------------------------------------------------------


def figures(report: Report) -> list[tuple[str, str, go.Figure | None, str]]:
    """``(anchor, section title, figure or None, note)`` in page order.

    A section whose data is empty has no figure, only a note saying why.
    """
    out: list[tuple[str, str, go.Figure | None, str]] = []
    title = "Confirmation on fresh seeds"
    if report.info.is_multi:
        pass  # confirmation is for single-objective studies: no section to point at it
    elif report.confirm is None:
        out.append(("confirm", title, None, "not confirmed: `tuner confirm --space SPACE` "
                    "re-trains the best trials and the baseline on fresh trainer seeds"))
    else:
        view = report.confirm
        has_runs = any(v is not None for r in view.rows for _, v in r.runs)
        out.append(("confirm", title, confirm_figure(view) if has_runs else None,
                    confirm_note(view)))
    history = report.history
    out.append(("history", "Optimization history",
                history_figure(history) if history.points else None,
                "" if history.points else "no trial finished yet"))
    out.append(("curves", "Learning curves",
                curves_figure(report.curves) if report.curves.curves else None,
                "" if report.curves.curves else "no trial reported an epoch"))
    imp = report.importances
    has_imp = bool(imp.by_objective) and bool(next(iter(imp.by_objective.values())))
    out.append(("importances", "Parameter importances",
                importances_figure(imp) if has_imp else None, imp.note))
    par = report.parallel
    out.append(("parallel", "Parallel coordinates",
                parallel_figure(par) if par.numbers else None,
                "" if par.numbers else "no complete trial yet"))
    fz = report.freeze
    out.append(("freeze", "Freeze view", freeze_figure(fz) if fz.groups else None,
                "" if fz.groups else "no trial recorded a freeze index"))
    for view in report.pareto:
        title = f"Pareto view: {view.metric} vs {view.cost_label}"
        costs = {p.cost for p in view.points}
        if len(costs) == 1:  # nothing to trade: every trial cost the same
            note = f"every complete trial recorded the same {view.cost_label}: {costs.pop():g}"
            out.append((f"pareto-{view.cost}", title, None, note))
        else:
            out.append((f"pareto-{view.cost}", title, pareto_figure(view), ""))
    if not report.pareto:
        out.append(("pareto", "Pareto view", None, "no complete trial recorded its cost"))
    return out


def render_html(report: Report) -> str:
    """The whole report as one HTML document with plotly.js inlined (works offline)."""
    from plotly.offline import get_plotlyjs

    info = report.info
    sections = []
    for anchor, title, fig, note in figures(report):
        part = f'<h2 id="{anchor}">{html.escape(title)}</h2>'
        if note:
            part += f'<p class="note">{html.escape(note)}</p>'
        if fig is not None:
            div = fig.to_html(
                full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                div_id=f"fig-{anchor}", default_height=f"{fig.layout.height or 450}px",
            )
            part += f'<div class="tuner-figure" data-figure="{anchor}">{div}</div>'
        sections.append(part)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    objective = ", ".join(f"{m} ({d})" for m, d in zip(info.metrics, info.directions))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>tuner report: {html.escape(info.name)}</title>"
        f"<style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>Study {html.escape(info.name)}</h1>"
        f'<p class="meta">objective {html.escape(objective)} &middot; generated {generated} by '
        "<code>tuner report</code></p>"
        f'<h2 id="summary">Summary</h2>{summary_table(report.summary, report.importances.note)}'
        + "".join(sections) + "</body></html>\n"
    )
