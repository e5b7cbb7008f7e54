"""Providers, and the rule that picks one when the user does not say."""

from __future__ import annotations

import os

from ..errors import ConfigError
from .anthropic_messages import AnthropicProvider
from .base import Provider
from .demo import DemoProvider
from .openai_chat import OpenAIProvider

NAMES = ("openai", "anthropic", "demo")
DEMO_NOTICE = (
    "notebook_kit: no API key found (OPENAI_API_KEY, ANTHROPIC_API_KEY), so the offline demo "
    "model answers: its replies are simulated. Set a key or pass provider=... for real ones."
)


def resolve(
    provider: str | Provider | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
) -> tuple[Provider, bool]:
    """The provider to use, and whether the demo model was chosen because no key was found.

    An explicit `provider` wins; a `base_url` alone means an OpenAI-compatible server; else
    the provider whose key is set (OPENAI_API_KEY first); with no key, the demo model.
    """
    if isinstance(provider, Provider):
        if base_url is not None or api_key is not None:
            raise ConfigError("give base_url/api_key to the provider object, not to run_df")
        return provider, False
    if provider == "openai":
        return OpenAIProvider(api_key=api_key, base_url=base_url), False
    if provider == "anthropic":
        return AnthropicProvider(api_key=api_key, base_url=base_url), False
    if provider == "demo":
        return DemoProvider(), False
    if provider is not None:
        raise ConfigError(f"unknown provider {provider!r}; choose one of {list(NAMES)}")
    if base_url is not None:
        return OpenAIProvider(api_key=api_key, base_url=base_url), False
    if api_key is not None:
        if isinstance(api_key, str) and api_key.strip().startswith("sk-ant-"):
            return AnthropicProvider(api_key=api_key), False
        return OpenAIProvider(api_key=api_key), False
    if _is_set("OPENAI_API_KEY") or _is_set("OPENAI_BASE_URL"):
        return OpenAIProvider(), False
    if _is_set("ANTHROPIC_API_KEY"):
        return AnthropicProvider(), False
    return DemoProvider(), True


def _is_set(env_var: str) -> bool:
    """Whether the environment variable holds more than whitespace."""
    return bool(os.environ.get(env_var, "").strip())


__all__ = [
    "DEMO_NOTICE",
    "AnthropicProvider",
    "DemoProvider",
    "OpenAIProvider",
    "Provider",
    "resolve",
]
