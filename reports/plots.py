"""PNG figures of the report (matplotlib, Agg backend; files are written atomically).

* :func:`anytime_plot`: best-so-far validation loss against cumulative node-hours, one line per
  tuner (median over seeds) with its interquartile band, one panel per scale; the target loss
  of each panel is drawn as a dotted line.
* :func:`scaling_plot`: wall hours to the common target and parallel efficiency against scale.
"""

from __future__ import annotations

import math
import os
import tempfile

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# One colour per tuner that stays the same across figures (Okabe-Ito, colour-blind safe).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000")
AXIS_LABELS = {"trial": "cumulative trial node-hours (epoch wall time x nodes)",
               "allocated": "allocated node-hours (run wall time x nodes held)"}


def tuner_colours(tuners) -> dict[str, str]:
    return {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(sorted(set(tuners)))}


def _save(fig, path: str, tight: bool = True) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=150, bbox_inches="tight" if tight else None)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _scale_label(scale_name: str, value: float) -> str:
    n = int(value) if float(value).is_integer() else value
    unit = "node" if scale_name == "nodes" else "worker"
    return f"{n} {unit}{'s' if n != 1 else ''}"


def _zoom_top(curves: pd.DataFrame, skip: float = 0.1) -> float | None:
    """Top of the y range: the worst median after the first ``skip`` of each panel's x range,
    so the first minutes of every search do not squash the comparison that matters."""
    tops = []
    for _, panel in curves.groupby("scale"):
        cut = skip * float(panel["node_hours"].max())
        later = panel[(panel["node_hours"] >= cut) & panel["q75"].map(math.isfinite)]
        if len(later):
            tops.append(float(later["q75"].max()))
    return max(tops) if tops else None


def anytime_plot(curves: pd.DataFrame, path: str, *, axis: str = "trial",
                 scale_name: str = "nodes", targets: dict | None = None,
                 objective: str = "val_loss", title: str = "", baseline: str = "random",
                 target_label: str = "target") -> None:
    """Best-so-far loss vs node-hours; ``curves`` from :func:`reports.tables.anytime_curves`.

    One panel per scale (shared y), one line per tuner (median over seeds, step-wise) with its
    interquartile band; the baseline tuner is drawn dashed in dark grey; the y range is zoomed
    to the part after the first 10 % of each panel's node-hours (stated under the figure).
    """
    scales = sorted(curves["scale"].unique()) if len(curves) else []
    if not scales:
        raise ValueError(f"{path}: no anytime curve to plot (no run has a finished epoch)")
    others = sorted(t for t in curves["tuner"].unique() if t != baseline)
    colours = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(others)}
    colours[baseline] = "#404040"
    ncols = len(scales) if len(scales) <= 3 else (2 if len(scales) == 4 else 3)
    nrows = math.ceil(len(scales) / ncols)
    width, height = max(4.6 * ncols + 0.9, 8.0), 3.4 * nrows + 1.9
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, sharey=True)
    # Fixed margins in inches: title and legend on top, axis label and footnote below.
    fig.subplots_adjust(top=1 - 1.0 / height, bottom=0.85 / height, left=0.85 / width,
                        right=1 - 0.15 / width, hspace=0.32, wspace=0.06)
    handles: dict[str, object] = {}
    seeds = sorted({int(n) for n in curves["runs"].unique()})
    for ax, s in zip(axes.flat, scales):
        sub = curves[curves["scale"] == s]
        for tuner in [baseline] + others:
            line = sub[sub["tuner"] == tuner]
            ok = line[line["median"].map(math.isfinite)]
            if ok.empty:
                continue
            dashed = tuner == baseline
            (h,) = ax.step(ok["node_hours"], ok["median"], where="post", color=colours[tuner],
                           lw=2.0, ls="--" if dashed else "-", zorder=3 if dashed else 2)
            handles.setdefault(tuner, h)
            band = line[line["q75"].map(math.isfinite) & line["q25"].map(math.isfinite)]
            ax.fill_between(band["node_hours"], band["q25"], band["q75"], step="post",
                            color=colours[tuner], alpha=0.13, lw=0)
        if targets and s in targets and math.isfinite(targets[s]):
            h = ax.axhline(targets[s], color="#B00020", ls=":", lw=1.3, zorder=1)
            handles.setdefault(target_label, h)
            ax.annotate(f"{targets[s]:.4g}", xy=(1.0, targets[s]), xycoords=("axes fraction",
                        "data"), xytext=(-3, 3), textcoords="offset points", ha="right",
                        va="bottom", fontsize=8, color="#B00020")
        ax.set_title(_scale_label(scale_name, s), fontsize=11, fontweight="bold")
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
        ax.tick_params(labelsize=9)
    for ax in list(axes.flat)[len(scales):]:
        ax.set_visible(False)
    top = _zoom_top(curves)
    y_note = "y axis zoomed past the first 10% of node-hours"
    if top is not None:
        low = float(curves.loc[curves["q25"].map(math.isfinite), "q25"].min())
        if low > 0 and top / low > 10:
            # Losses spanning decades: a log axis keeps the late, close-run part readable.
            axes.flat[0].set_yscale("log")
            axes.flat[0].set_ylim(low / 1.15, top * 1.15)
            y_note = "log y axis, zoomed past the first 10% of node-hours"
        else:
            pad = 0.05 * (top - low) if top > low else 0.05 * abs(top) or 0.05
            axes.flat[0].set_ylim(low - pad, top + pad)
    fig.supxlabel(AXIS_LABELS.get(axis, "node-hours"), fontsize=11, y=0.38 / height)
    fig.supylabel(f"best {objective} so far (lower is better)", fontsize=11, x=0.12 / width)
    fig.suptitle(title or "Search quality vs compute: best validation loss so far",
                 fontsize=13, fontweight="bold", y=1 - 0.12 / height, va="top")
    labels = [t for t in [baseline] + others if t in handles] + (
        [target_label] if target_label in handles else [])
    fig.legend([handles[k] for k in labels], labels, loc="upper center",
               bbox_to_anchor=(0.5, 1 - 0.48 / height), ncol=len(labels), fontsize=9.5,
               frameon=False, handlelength=2.6)
    seed_text = "/".join(map(str, seeds)) + (" seed" if seeds == [1] else " seeds")
    fig.text(0.5, 0.06 / height, f"line: median over {seed_text} per tuner; band: "
             f"interquartile range; {y_note}",
             ha="center", va="bottom", fontsize=8, color="0.35")
    _save(fig, path, tight=False)


def scaling_plot(scaling: pd.DataFrame, path: str, *, scale_name: str = "nodes",
                 title: str = "", baseline: str = "random") -> None:
    """Wall hours to the common target (log-log, dotted ideal) and efficiency against scale."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    if scaling.empty:
        raise ValueError(f"{path}: no scaling data to plot")
    others = sorted(t for t in scaling["tuner"].unique() if t != baseline)
    colours = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(others)}
    colours[baseline] = "#404040"
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(11.5, 4.6))
    for tuner in [baseline] + others:
        sub = scaling[scaling["tuner"] == tuner].sort_values("scale")
        ok = sub[sub["wall_hours_to_target"].map(math.isfinite)]
        if ok.empty:
            continue
        style = dict(color=colours[tuner], lw=2, ls="--" if tuner == baseline else "-",
                     marker="o", label=tuner)
        ax_t.plot(ok["scale"], ok["wall_hours_to_target"], **style)
        s0, t0 = float(ok["scale"].iloc[0]), float(ok["wall_hours_to_target"].iloc[0])
        ax_t.plot(ok["scale"], [t0 * s0 / s for s in ok["scale"]], ":", color=colours[tuner],
                  lw=1)
        eff = ok[ok["efficiency"].map(math.isfinite)]
        ax_e.plot(eff["scale"], eff["efficiency"], **style)
    unit = "nodes" if scale_name == "nodes" else "workers (concurrent trials)"
    ticks = sorted(scaling["scale"].unique())
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax in (ax_t, ax_e):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"scale: {unit}", fontsize=11)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.set_yscale("log")
    ax_t.yaxis.set_major_formatter(plain)
    ax_t.yaxis.set_minor_formatter(plain)
    ax_t.tick_params(axis="y", which="minor", labelsize=8)
    ax_t.set_ylabel("wall-clock hours to target loss", fontsize=11)
    ax_t.set_title("time to target (median over seeds; dotted: ideal)", fontsize=11)
    ax_e.axhline(1.0, color="0.4", ls=":", lw=1)
    ax_e.set_ylabel("parallel efficiency = speedup / scale ratio", fontsize=11)
    ax_e.set_ylim(bottom=0)
    ax_e.set_title("efficiency against the smallest scale", fontsize=11)
    ax_t.legend(fontsize=9.5)
    target = scaling["target_loss"].iloc[0]
    fig.suptitle(title or f"Scaling of the searches (common target loss {target:.4g})",
                 fontsize=13, fontweight="bold")
    fig.tight_layout()
    _save(fig, path)
