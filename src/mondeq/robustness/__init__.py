"""Certified and empirical robustness of equilibrium classifiers (SPEC 5).

* :mod:`~mondeq.robustness.lipschitz` — ℓ2 bounds of monDEQ/OptEq, native ℓ∞ bounds of NEMON, certified radii.
* :mod:`~mondeq.robustness.interval` — interval enclosures of NEMON equilibria (mixed-monotone embedding).
* :mod:`~mondeq.robustness.attacks` — PGD in ℓ∞ and ℓ2 with restarts, warm-started solves.
* :mod:`~mondeq.robustness.certified_training` — interval-bound and Lipschitz-margin losses.
* :mod:`~mondeq.robustness.certify` — the certify loop and its plot.
"""

from .attacks import pgd, warm_started
from .certified_training import CertifiedLoss, LipschitzPenalty
from .certify import certified_radius, certify, plot_certify
from .interval import MixedMonotoneEmbedding, enclose, head_margins, interval_margins, pixel_box
from .lipschitz import certified_radii, linf_certificate, lipschitz_l2

__all__ = ["CertifiedLoss", "LipschitzPenalty", "MixedMonotoneEmbedding", "certified_radii", "certified_radius",
           "certify", "enclose", "head_margins", "interval_margins", "linf_certificate", "lipschitz_l2", "pgd",
           "pixel_box", "plot_certify", "warm_started"]
