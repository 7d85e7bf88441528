"""
Statistics of a multi-seed study: mean and spread over seeds, and paired per-image comparisons of two
models on the same test images with an exact McNemar (sign) test.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai_assim.robustness.results import PER_IMAGE_COLUMNS, load_per_image_rows

__all__ = [
    "PER_IMAGE_COLUMNS",
    "aggregate_over_seeds",
    "mcnemar_exact",
    "paired_flips",
    "read_per_image",
]


def mcnemar_exact(b: int, c: int) -> float:
    r"""
    Two-sided exact McNemar test of ``b`` and ``c`` discordant pairs (the sign test):
    :math:`p = \min\big(1, 2 \sum_{k=0}^{\min(b, c)} \binom{b+c}{k} 2^{-(b+c)}\big)`; 1 when ``b + c = 0``.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got {b}, {c}.")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _key(row: Mapping[str, Any]) -> tuple[str, float, str]:
    eps_255 = row.get("eps_255")
    if eps_255 is None or eps_255 == "":
        eps_255 = float(row["eps"]) * 255
    return str(row["attack"]), round(float(eps_255), 4), str(row.get("role") or "attack")


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def aggregate_over_seeds(results: Mapping[Any, Mapping[str, Sequence[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """
    Mean and spread over seeds of each arm's accuracy per (attack, eps, role).

    Args:
        results: ``seed -> arm -> rows`` of the robustness handler (``attack``, ``eps`` or ``eps_255``,
            ``role``, ``n``, ``accuracy``; e.g. :func:`monai_assim.visualize.load_robustness_rows`).

    Returns:
        rows ``{"arm", "attack", "eps_255", "role", "n_seeds", "n_images", "mean", "std", "min", "max"}``
        in the order of the first seed's rows, arm by arm; ``std`` is the sample standard deviation
        (``ddof = 1``; ``None`` for one seed) and ``n_images`` the mean test-set size.
    """
    collected: dict[tuple, list[tuple[float, int]]] = {}
    order: list[tuple] = []
    for per_arm in results.values():
        for arm, rows in per_arm.items():
            for r in rows:
                key = (arm, *_key(r))
                if key not in collected:
                    collected[key] = []
                    order.append(key)
                collected[key].append((float(r["accuracy"]), int(r["n"])))
    arms = list(dict.fromkeys(k[0] for k in order))
    out = []
    for arm in arms:
        for key in (k for k in order if k[0] == arm):
            values = [v for v, _ in collected[key]]
            out.append(
                {
                    "arm": arm,
                    "attack": key[1],
                    "eps_255": key[2],
                    "role": key[3],
                    "n_seeds": len(values),
                    "n_images": sum(n for _, n in collected[key]) / len(values),
                    **_stats(values),
                }
            )
    return out


def read_per_image(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> dict[tuple[str, str, float, str], bool]:
    """
    ``(image, attack, eps_255, role) -> correct`` from a ``robustness_per_image.csv`` (columns
    :data:`PER_IMAGE_COLUMNS`; the image path identifies an image, the ``sample`` index where it is empty).
    With ``image_root``, paths under it are made relative to it, so that runs whose data set lies in
    different folders (each demo run generates its own copy) pair their images.
    """
    root = os.path.abspath(os.fspath(image_root)) if image_root is not None else None
    out = {}
    for r in load_per_image_rows(path):
        image = r["image"] or f"sample {r['sample']}"
        if root is not None and os.path.isabs(image) and os.path.abspath(image).startswith(root + os.sep):
            image = os.path.relpath(os.path.abspath(image), root)
        out[(image, *_key(r))] = bool(r["correct"])
    return out


def paired_flips(
    per_image: Mapping[Any, Mapping[str, Mapping[tuple, bool]]], reference: str = "vanilla"
) -> list[dict[str, Any]]:
    """
    Paired comparison of each arm with ``reference`` on the same test images, per seed and pooled.

    Args:
        per_image: ``seed -> arm -> {(image, attack, eps_255, role): correct}`` (:func:`read_per_image`).
        reference: the arm the others are compared with.

    Returns:
        rows ``{"seed", "arm", "attack", "eps_255", "role", "n", "both_right", "ref_right_arm_wrong",
        "ref_wrong_arm_right", "both_wrong", "net_gain", "p_mcnemar"}``: for every image present in both
        files, whether each model classified it correctly under that attack and eps.
        ``ref_right_arm_wrong`` counts the images that flip from correct (``reference``) to wrong (arm),
        ``ref_wrong_arm_right`` the flips back; ``net_gain`` is their difference (arm's accuracy gain in
        images) and ``p_mcnemar`` the exact two-sided McNemar p-value (:func:`mcnemar_exact`). Rows with
        ``seed = "pooled"`` add the counts over seeds (each seed's own test images; the pooled test is
        the sign test on all discordant pairs).
    """
    rows: list[dict[str, Any]] = []
    pooled: dict[tuple, list[int]] = {}
    for seed, arms in per_image.items():
        if reference not in arms:
            continue
        ref = arms[reference]
        for arm, data in arms.items():
            if arm == reference:
                continue
            counts: dict[tuple, list[int]] = {}
            for key, right in data.items():
                if key not in ref:
                    continue
                c = counts.setdefault(key[1:], [0, 0, 0, 0])
                c[(0 if ref[key] else 2) + (0 if right else 1)] += 1
            for cond, c in counts.items():
                rows.append(_paired_row(seed, arm, cond, c))
                p = pooled.setdefault((arm, *cond), [0, 0, 0, 0])
                for i in range(4):
                    p[i] += c[i]
    for (arm, *cond), c in pooled.items():
        rows.append(_paired_row("pooled", arm, tuple(cond), c))
    return rows


def _paired_row(seed: Any, arm: str, cond: tuple, c: Sequence[int]) -> dict[str, Any]:
    both_right, lost, gained, both_wrong = c
    return {
        "seed": seed,
        "arm": arm,
        "attack": cond[0],
        "eps_255": cond[1],
        "role": cond[2],
        "n": sum(c),
        "both_right": both_right,
        "ref_right_arm_wrong": lost,
        "ref_wrong_arm_right": gained,
        "both_wrong": both_wrong,
        "net_gain": gained - lost,
        "p_mcnemar": mcnemar_exact(lost, gained),
    }
