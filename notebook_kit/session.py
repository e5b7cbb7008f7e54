"""The session's defaults: what a run uses for an option the call leaves out.

`kit.defaults` is the one mutable settings object (a teacher sets concurrency and model once
for the class notebook, by hand or with `kit.controls()`); every run copies it into its own
frozen `RunConfig` when it starts, so changing it never touches a running job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .providers.base import Provider


@dataclass
class SessionDefaults:
    """Options that runs take from here when the call does not give them."""

    provider: str | Provider | None = None  # None: chosen from the keys in the environment
    model: str | None = None  # None: the provider's default model
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = 5
    timeout: float = 120.0
    cache: bool | str = True  # True: the default cache file; False: off; or a file path
    budget_usd: float | None = None
    adaptive: bool = True


defaults = SessionDefaults()
