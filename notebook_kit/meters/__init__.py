"""Everything that can hold a request back, behind one protocol (see `base.Meter`)."""

from .base import AttemptOutcome, Meter, Refused
from .budget import Budget, BudgetMeter
from .concurrency import AdaptiveConcurrency, ConcurrencyLimit, ConcurrencyMeter
from .gate import HeaderPacing, StartGate
from .rate import RateMeter

__all__ = [
    "AdaptiveConcurrency",
    "AttemptOutcome",
    "Budget",
    "BudgetMeter",
    "ConcurrencyLimit",
    "ConcurrencyMeter",
    "HeaderPacing",
    "Meter",
    "RateMeter",
    "Refused",
    "StartGate",
]
