"""DD-Ranking's scores of a distilled set, from accuracies measured under one protocol."""

from __future__ import annotations

import math


def label_robust_score(syn_soft: float, random_soft: float, syn_hard: float, full_hard: float,
                       weight: float = 0.5) -> dict[str, float]:
    """DD-Ranking's scores from four top-1 accuracies in percent: IOR (the set against a random real
    subset, both with the same soft labels), HLR (full real data against the set, both with hard
    labels), and LRS = (e^a - e^-1) / (e - e^-1) with a = w * IOR - (1 - w) * HLR.

    As ddranking 0.2.0 writes it (``ddranking/metrics/soft_label.py``, ``compute_metrics``); its code
    takes IOR and HLR in percent, which puts ``a`` far outside [-1, 1] and LRS below 0 whenever HLR is a
    few points; the normalisation maps ``a`` in [-1, 1] to LRS in [0, 1], which holds with accuracies
    as fractions, so here they are divided by 100. IOR and HLR are reported in points."""
    ior, hlr = syn_soft - random_soft, full_hard - syn_hard
    a = weight * ior / 100 - (1 - weight) * hlr / 100
    lrs = (math.exp(a) - math.exp(-1)) / (math.e - math.exp(-1))
    return {"ior": round(ior, 2), "hlr": round(hlr, 2), "lrs": round(lrs, 4)}


__all__ = ["label_robust_score"]
