"""Douglas–Rachford splitting: the averaged Peaceman–Rachford step ``u⁺ = ½(u + u_PR)`` (SPEC 2).

Slower than Peaceman–Rachford on well-conditioned problems, more robust on badly conditioned ones
(the averaged operator is firmly non-expansive for any monotone ``I − W``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .peaceman_rachford import PeacemanRachford


@dataclass(frozen=True, kw_only=True)
class DouglasRachford(PeacemanRachford):
    """Douglas–Rachford splitting; converges for every ``alpha > 0`` (default 1; ``"auto"``: ``1/√(mL)``)."""

    name = "douglas-rachford"
    relaxation = 0.5
