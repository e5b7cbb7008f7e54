"""What an SDK function takes, read from its signature once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any


@functools.cache
def keyword_params(function: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword arguments `function` takes (None: any, it has **kwargs); read once."""
    params = inspect.signature(function).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
