"""Summary statistics of a set of events in the Delphes particle-flow schema.

``event_statistics`` reads only the arrays of :class:`~mlpf_tf.data.schema.Event` (so it works
on generated and on loaded, possibly padded, events) and returns plain Python numbers for
reports and sanity checks: elements, tracks and towers per event, the ygen / ycand class
fractions over real (non-padding) elements and over all rows, particles per event, the fake
track fraction and the track / tower agreement of ygen and ycand classes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mlpf_tf.data import schema as S


def _summary(values: list[int]) -> dict:
    if not values:
        return {"mean": 0.0, "min": 0, "max": 0}
    arr = np.asarray(values)
    return {"mean": float(arr.mean()), "min": int(arr.min()), "max": int(arr.max())}


def _fractions(counts: np.ndarray, total: int) -> dict:
    return {name: (float(counts[i]) / total if total else 0.0)
            for i, name in enumerate(S.CLASS_NAMES)}


def event_statistics(events: Iterable[S.Event]) -> dict:
    """Statistics of ``events`` (an iterable of Event or (X, ygen, ycand) tuples).

    Keys: ``n_events``; ``elements_per_event``, ``tracks_per_event``, ``towers_per_event``,
    ``ygen_particles_per_event``, ``ycand_particles_per_event`` (each {mean, min, max}; padding
    rows excluded); ``ygen_class_fractions`` / ``ycand_class_fractions`` (class name ->
    fraction over non-padding elements); ``ygen_class_fractions_all`` /
    ``ycand_class_fractions_all`` (over all rows, padding counted as "none");
    ``ygen_class_counts`` / ``ycand_class_counts``; ``fake_track_fraction`` (tracks whose ygen is
    class 0); ``class_agreement`` (fraction of non-padding elements whose ygen and ycand
    classes agree); ``padding_fraction``; ``ycand_efficiency`` (per class: of the elements
    whose ygen is the class, the fraction whose ycand is the same class) and
    ``ycand_fake_rate`` (of the elements whose ycand is the class, the fraction whose ygen is
    not).
    """
    n_events = 0
    n_elem, n_trk, n_tow, n_gen, n_cand = [], [], [], [], []
    gen_counts = np.zeros(S.NUM_CLASSES, np.int64)
    cand_counts = np.zeros(S.NUM_CLASSES, np.int64)
    rows_all = 0
    fake_tracks = 0
    agree = 0
    both = np.zeros(S.NUM_CLASSES, np.int64)  # elements with ygen == ycand == class
    for i, event in enumerate(events):
        X, ygen, ycand = event
        S.check_event(X, ygen, ycand, where=f"event {i}")
        n_events += 1
        rows_all += X.shape[0]
        types = X[:, S.F_TYPE]
        real = types != S.ELEM_PAD
        trk = types == S.ELEM_TRACK
        g = ygen[:, S.T_CLS].astype(np.int64)
        c = ycand[:, S.T_CLS].astype(np.int64)
        n_elem.append(int(real.sum()))
        n_trk.append(int(trk.sum()))
        n_tow.append(int((types == S.ELEM_TOWER).sum()))
        n_gen.append(int((g[real] != S.CLS_NONE).sum()))
        n_cand.append(int((c[real] != S.CLS_NONE).sum()))
        gen_counts += np.bincount(g[real], minlength=S.NUM_CLASSES)
        cand_counts += np.bincount(c[real], minlength=S.NUM_CLASSES)
        fake_tracks += int((g[trk] == S.CLS_NONE).sum())
        agree += int((g[real] == c[real]).sum())
        same = real & (g == c)
        both += np.bincount(g[same], minlength=S.NUM_CLASSES)
    n_real = int(sum(n_elem))
    pad = rows_all - n_real
    gen_all = gen_counts.copy()
    cand_all = cand_counts.copy()
    gen_all[S.CLS_NONE] += pad
    cand_all[S.CLS_NONE] += pad
    n_tracks = int(sum(n_trk))
    return {
        "n_events": n_events,
        "elements_per_event": _summary(n_elem),
        "tracks_per_event": _summary(n_trk),
        "towers_per_event": _summary(n_tow),
        "ygen_particles_per_event": _summary(n_gen),
        "ycand_particles_per_event": _summary(n_cand),
        "ygen_class_fractions": _fractions(gen_counts, n_real),
        "ycand_class_fractions": _fractions(cand_counts, n_real),
        "ygen_class_fractions_all": _fractions(gen_all, rows_all),
        "ycand_class_fractions_all": _fractions(cand_all, rows_all),
        "ygen_class_counts": {n: int(gen_counts[i]) for i, n in enumerate(S.CLASS_NAMES)},
        "ycand_class_counts": {n: int(cand_counts[i]) for i, n in enumerate(S.CLASS_NAMES)},
        "fake_track_fraction": fake_tracks / n_tracks if n_tracks else 0.0,
        "class_agreement": agree / n_real if n_real else 0.0,
        "padding_fraction": pad / rows_all if rows_all else 0.0,
        "ycand_efficiency": {n: (float(both[i]) / gen_counts[i] if gen_counts[i] else 0.0)
                             for i, n in enumerate(S.CLASS_NAMES) if i != S.CLS_NONE},
        "ycand_fake_rate": {n: (1.0 - float(both[i]) / cand_counts[i] if cand_counts[i]
                                else 0.0)
                            for i, n in enumerate(S.CLASS_NAMES) if i != S.CLS_NONE},
    }


def comparison_table(stats_by_name: dict[str, dict]) -> str:
    """A Markdown table of :func:`event_statistics` outputs side by side (one column each):
    elements per event, ygen / ycand class fractions, ycand efficiency and fake rate per class.
    """
    names = list(stats_by_name)
    rows = [("events", lambda s: f"{s['n_events']}"),
            ("elements per event (mean)", lambda s: f"{s['elements_per_event']['mean']:.1f}"),
            ("tracks per event (mean)", lambda s: f"{s['tracks_per_event']['mean']:.1f}"),
            ("towers per event (mean)", lambda s: f"{s['towers_per_event']['mean']:.1f}")]
    for key, label in (("ygen_class_fractions", "ygen fraction"),
                       ("ycand_class_fractions", "ycand fraction")):
        rows += [(f"{label} {c}", lambda s, key=key, c=c: f"{s[key][c]:.3f}")
                 for c in S.CLASS_NAMES]
    for key, label in (("ycand_efficiency", "ycand efficiency"),
                       ("ycand_fake_rate", "ycand fake rate")):
        rows += [(f"{label} {c}", lambda s, key=key, c=c: f"{s[key][c]:.3f}")
                 for c in S.CLASS_NAMES[1:]]
    lines = ["| quantity | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for label, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(stats_by_name[n]) for n in names) + " |")
    return "\n".join(lines)


def format_statistics(stats: dict) -> str:
    """A compact multi-line text rendering of :func:`event_statistics` output."""
    lines = [f"events: {stats['n_events']}"]
    for key in ("elements_per_event", "tracks_per_event", "towers_per_event",
                "ygen_particles_per_event", "ycand_particles_per_event"):
        s = stats[key]
        lines.append(f"{key}: mean {s['mean']:.1f} min {s['min']} max {s['max']}")
    for key in ("ygen_class_fractions", "ycand_class_fractions"):
        lines.append(f"{key}: " + ", ".join(f"{k} {v:.3f}" for k, v in stats[key].items()))
    lines.append(f"fake_track_fraction: {stats['fake_track_fraction']:.4f}  "
                 f"class_agreement: {stats['class_agreement']:.3f}  "
                 f"padding_fraction: {stats['padding_fraction']:.3f}")
    return "\n".join(lines)
