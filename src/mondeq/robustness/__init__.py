"""Certified and empirical robustness of equilibrium classifiers (SPEC 5).

* :mod:`~mondeq.robustness.lipschitz` — the certificate protocol (:class:`Certifiable`: a model's Lipschitz and
  interval bounds from its parts' norms) and certified radii.
* :mod:`~mondeq.robustness.interval` — interval enclosures by the mixed-monotone embedding.
* :mod:`~mondeq.robustness.attacks` — PGD in ℓ∞ and ℓ2 with restarts, warm-started solves.
* :mod:`~mondeq.robustness.certified_training` — interval-bound and Lipschitz-margin losses.
* :mod:`~mondeq.robustness.certify` — the certify loop and its plot.

The input normalisation is a :class:`~mondeq.normalization.Normalization`; nothing here imports the data layer.
"""

from .attacks import pgd, warm_started
from .certified_training import CertifiedLoss, LipschitzPenalty
from .certify import certified_radius, certify, plot_certify
from .interval import Embedding, MixedMonotoneEmbedding, embed, embed_dense, enclose, enclosed_margins, head_margins
from .lipschitz import Certifiable, LipschitzBound, certified_radii

__all__ = ["Certifiable", "CertifiedLoss", "Embedding", "LipschitzBound", "LipschitzPenalty",
           "MixedMonotoneEmbedding", "certified_radii", "certified_radius", "certify", "embed", "embed_dense",
           "enclose", "enclosed_margins", "head_margins", "pgd", "plot_certify", "warm_started"]
