"""Accuracy-vs-eps plots of the results written by AdversarialRobustnessHandler."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai_assim.robustness_results import WORST, load_robustness_rows

__all__ = ["load_robustness_rows", "plot_robustness", "plot_worst_case_by_arm"]


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


def plot_robustness(
    results: str | os.PathLike | Sequence[Mapping[str, Any]],
    output_path: str | os.PathLike,
    vanilla: str | os.PathLike | Sequence[Mapping[str, Any]] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> str:
    """
    Plot robust accuracy against eps, one colour per attack, and save a PNG.

    With ``vanilla`` given this draws the paper's figure: ``results`` (the assimilated model) as solid
    lines, ``vanilla`` as dashed lines in the same colour per attack. The x axis is eps in units of
    1/255, the y axis accuracy on [0, 1]; each curve starts from the clean accuracy at eps = 0.
    Only the eps-grid rows (role ``attack``) and the worst case over attacks (role ``worst``, drawn in
    black) are drawn; the large-eps PGD check and the structure-aware check rows are left out.

    Args:
        results: a result file (``.csv``/``.json``) or loaded rows.
        output_path: the PNG to write (folders are created).
        vanilla: optional second result file or rows, drawn dashed.
        title: figure title; default names the variants.
        dpi: resolution.

    Returns:
        the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    solid = _curves(load_robustness_rows(results))
    dashed = _curves(load_robustness_rows(vanilla)) if vanilla is not None else {}
    if not solid and not dashed:
        raise ValueError("no attack rows to plot.")
    names = list(dict.fromkeys(list(solid) + list(dashed)))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    solid_label = "assimilated" if vanilla is not None else None
    for i, name in enumerate(names):
        colour = "black" if name == WORST else colours(i % 10)  # the worst case over attacks in black
        if name in solid:
            e, a = zip(*solid[name])
            label = f"{name} ({solid_label})" if solid_label else name
            ax.plot(e, a, "-o", color=colour, label=label, markersize=4)
        if name in dashed:
            e, a = zip(*dashed[name])
            ax.plot(e, a, "--s", color=colour, label=f"{name} (vanilla)", markersize=4)
    default_title = "vanilla (dashed) vs assimilated (solid)" if vanilla is not None else "accuracy under attack"
    return _finish(fig, ax, "accuracy", title or default_title, output_path, dpi, ncol=2 if vanilla is not None else 1)


def _finish(fig: Any, ax: Any, ylabel: str, title: str, output_path: str | os.PathLike, dpi: int, ncol: int = 1) -> str:
    """Axes (eps in 1/255 against accuracy on [0, 1]), title and legend; save the PNG and close the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(r"$\epsilon$ ($\times$1/255)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=ncol)
    fig.tight_layout()
    output_path = os.fspath(output_path)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    fig.savefig(output_path, dpi=dpi, format="png")
    plt.close(fig)
    return output_path


def plot_worst_case_by_arm(
    rows: Sequence[Mapping[str, Any]], output_path: str | os.PathLike, title: str | None = None, dpi: int = 120
) -> str:
    """
    Worst-case accuracy over attacks against eps, one line per study arm, and save a PNG.

    ``rows`` are the study's aggregate rows (``arm``, ``attack``, ``eps_255``, ``role``, ``mean``, ``min``,
    ``max``; :func:`monai_assim.stats.aggregate_over_seeds`): each arm's line starts at its clean accuracy
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
