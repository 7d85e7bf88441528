"""Accuracy-vs-eps plots of the results written by AdversarialRobustnessHandler."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai_assim.robustness.results import WORST, load_robustness_rows
from monai_assim.utils import atomic_write

__all__ = ["load_robustness_rows", "plot_robustness", "plot_worst_case_by_arm", "robustness_lines"]


def _curves(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """attack -> sorted (eps * 255, accuracy), starting from the clean accuracy at eps 0; the worst case
    over attacks (role ``worst``) as the curve ``"worst"``."""
    clean = [r["accuracy"] for r in rows if r.get("role") == "clean" or r["attack"] == "clean"]
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["attack"] == "clean" or r.get("role", "attack") not in ("attack", WORST):
            continue
        curves.setdefault(r["attack"], []).append((r["eps"] * 255, r["accuracy"]))
    for name, pts in curves.items():
        if clean and not any(e == 0 for e, _ in pts):
            pts.append((0.0, clean[0]))
        curves[name] = sorted(pts)
    return curves


#: line style and marker of each result set (the run, then the compared runs): filled, then hollow markers
_SET_STYLES = (("-", "o", True), ("--", "s", False), (":", "^", False), ("-.", "D", False))


def robustness_lines(
    series: Sequence[tuple[str | None, str | os.PathLike | Sequence[Mapping[str, Any]]]], offset: float = 0.03
) -> list[dict[str, Any]]:
    """
    The lines :func:`plot_robustness` draws for one or more result sets, with the shift that keeps equal
    curves visible.

    Every attack keeps one colour (the worst case over attacks: black) and every result set its own line
    style and marker (the first solid with filled circles, the next dashed with hollow squares, ...).
    Curves that lie on top of each other (two runs with the same accuracies, or attacks that all reach 0)
    would hide each other, so line ``k`` of ``L`` is shifted along the eps axis by
    ``(k - (L - 1) / 2) * step``, ``step = min(offset, 0.5 / (L - 1))`` times the smallest gap between two
    eps values: all shifts together span at most half of that gap, so points of neighbouring eps never mix.

    Args:
        series: ``(label, results)`` pairs; ``results`` a result file (``.csv``/``.json``) or loaded rows;
            ``label`` None for a single set drawn without a suffix in the legend.
        offset: the shift between neighbouring lines as a fraction of the smallest eps gap (0: no shift).

    Returns:
        one dict per line: ``label`` (legend), ``attack``, ``set`` (index in ``series``), ``eps`` (eps x 255,
        unshifted), ``x`` (shifted), ``y`` (accuracy), ``color`` (``None``: the attack's colour of the
        colour cycle, else ``"black"``), ``attack_index``, ``linestyle``, ``marker``, ``filled``, ``shift``.
    """
    curves = [(label, _curves(load_robustness_rows(results))) for label, results in series]
    names = list(dict.fromkeys(name for _, c in curves for name in c))
    lines: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        for k, (label, c) in enumerate(curves):
            if name not in c:
                continue
            style, marker, filled = _SET_STYLES[k % len(_SET_STYLES)]
            e, a = zip(*c[name])
            lines.append(
                dict(
                    label=name if label is None else f"{name} ({label})",
                    attack=name,
                    set=k,
                    eps=list(e),
                    y=list(a),
                    color="black" if name == WORST else None,
                    attack_index=i,
                    linestyle=style,
                    marker=marker,
                    filled=filled,
                )
            )
    xs = sorted({x for line in lines for x in line["eps"]})
    gap = min((b - a for a, b in zip(xs, xs[1:])), default=1.0) or 1.0
    step = min(float(offset), 0.5 / max(len(lines) - 1, 1)) * gap
    for k, line in enumerate(lines):
        line["shift"] = (k - (len(lines) - 1) / 2) * step
        line["x"] = [x + line["shift"] for x in line["eps"]]
    return lines


def plot_robustness(
    results: str | os.PathLike | Sequence[Mapping[str, Any]],
    output_path: str | os.PathLike,
    vanilla: str | os.PathLike | Sequence[Mapping[str, Any]] | None = None,
    title: str | None = None,
    dpi: int = 120,
    labels: Sequence[str] | None = None,
    offset: float = 0.03,
) -> str:
    """
    Plot robust accuracy against eps, one colour per attack, and save a PNG.

    With ``vanilla`` given this draws the paper's figure: ``results`` (the assimilated model) as solid
    lines with filled circles, ``vanilla`` as dashed lines with hollow squares in the same colour per
    attack. The x axis is eps in units of 1/255, the y axis accuracy on [0, 1]; each curve starts from the
    clean accuracy at eps = 0. Only the eps-grid rows (role ``attack``) and the worst case over attacks
    (role ``worst``, drawn in black) are drawn; the large-eps PGD check and the structure-aware check
    rows are left out. Curves are shifted slightly along the eps axis (:func:`robustness_lines`) so that
    curves with equal values stay visible; a note under the plot gives the largest shift.

    Args:
        results: a result file (``.csv``/``.json``) or loaded rows.
        output_path: the PNG to write (folders are created; written atomically).
        vanilla: optional second result file or rows, drawn dashed.
        title: figure title; default names the variants.
        dpi: resolution.
        labels: legend names of ``results`` and ``vanilla``; default ``("assimilated", "vanilla")`` with
            ``vanilla``, no suffix without.
        offset: see :func:`robustness_lines`; 0 draws the curves at their exact eps.

    Returns:
        the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if vanilla is None:
        series = [(None if labels is None else labels[0], results)]
    else:
        names = ("assimilated", "vanilla") if labels is None else tuple(labels)
        series = [(names[0], results), (names[1], vanilla)]
    lines = robustness_lines(series, offset=offset)
    if not lines:
        raise ValueError("no attack rows to plot.")
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for line in lines:
        colour = line["color"] or colours(line["attack_index"] % 10)
        ax.plot(
            line["x"],
            line["y"],
            linestyle=line["linestyle"],
            marker=line["marker"],
            color=colour,
            markerfacecolor=colour if line["filled"] else "none",
            label=line["label"],
            markersize=4 if line["filled"] else 5,
        )
    shift = max(abs(line["shift"]) for line in lines)
    note = f"(points shifted by up to \u00b1{shift:.2g} so that equal curves stay visible)" if shift > 0 else None
    if vanilla is None:
        default_title = "accuracy under attack"
    elif labels is None:
        default_title = "vanilla (dashed) vs assimilated (solid)"
    else:
        default_title = f"{series[0][0]} (solid) vs {series[1][0]} (dashed)"
    ncol = 2 if vanilla is not None else 1
    return _finish(fig, ax, "accuracy", title or default_title, output_path, dpi, ncol=ncol, note=note)


def _finish(
    fig: Any,
    ax: Any,
    ylabel: str,
    title: str,
    output_path: str | os.PathLike,
    dpi: int,
    ncol: int = 1,
    note: str | None = None,
) -> str:
    """Axes (eps in 1/255 against accuracy on [0, 1]), title and legend; save the PNG atomically and close."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(r"$\epsilon$ ($\times$1/255)" + ("" if note is None else "\n" + note))
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=ncol)
    fig.tight_layout()
    output_path = os.fspath(output_path)
    try:
        atomic_write(output_path, lambda f: fig.savefig(f, dpi=dpi, format="png"))
    finally:
        plt.close(fig)
    return output_path


def plot_worst_case_by_arm(
    rows: Sequence[Mapping[str, Any]], output_path: str | os.PathLike, title: str | None = None, dpi: int = 120
) -> str:
    """
    Worst-case accuracy over attacks against eps, one line per study arm, and save a PNG.

    ``rows`` are the study's aggregate rows (``arm``, ``attack``, ``eps_255``, ``role``, ``mean``, ``min``,
    ``max``; :func:`monai_assim.robustness.stats.aggregate_over_seeds`): each arm's line starts at its clean accuracy
    (eps 0) and follows its ``worst`` rows (role ``worst``), the mean over seeds, with the range over seeds
    as a band where there are several. Vanilla arms are dashed.

    Returns:
        the PNG path.

    Raises:
        ValueError: when no arm has worst-case rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in rows:
        if (r["attack"], r["role"]) in (("clean", "clean"), (WORST, WORST)):
            lines.setdefault(r["arm"], []).append(
                (float(r["eps_255"]), float(r["mean"]), float(r["min"]), float(r["max"]))
            )
    lines = {arm: sorted(v) for arm, v in lines.items() if len(v) > 1}
    if not lines:
        raise ValueError("no worst-case rows to plot (run the study with --worst_case).")
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (arm, points) in enumerate(lines.items()):
        e, mean, low, high = zip(*points)
        style = "--s" if arm.startswith("vanilla") else "-o"
        ax.plot(e, mean, style, color=colours(i % 10), label=arm, markersize=4)
        if any(h > lo for lo, h in zip(low, high)):
            ax.fill_between(e, low, high, color=colours(i % 10), alpha=0.12)
    return _finish(
        fig, ax, "worst-case accuracy over attacks", title or "worst case over attacks, per arm", output_path, dpi
    )
