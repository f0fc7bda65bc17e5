"""Model profiles: context window, output limit and quirks of well-known models, matched by name prefix.

The runtime takes the context window from configuration first, then from the upstream when it reports one (vLLM's
`max_model_len`), then from here. Unknown models get an empty profile, and the runtime asks for the window to be
configured rather than guess it.
"""

from __future__ import annotations

from ._protocol import ModelProfile

# Longest prefix wins. Figures are the providers' published limits.
_PROFILES: dict[str, ModelProfile] = {
    "gpt-4o": ModelProfile(128_000, 16_384),
    "gpt-4.1": ModelProfile(1_047_576, 32_768),
    "gpt-5": ModelProfile(400_000, 128_000, system_role="developer"),
    "o1": ModelProfile(200_000, 100_000, system_role="developer"),
    "o3": ModelProfile(200_000, 100_000, system_role="developer"),
    "o4-mini": ModelProfile(200_000, 100_000, system_role="developer"),
    "claude-3-5": ModelProfile(200_000, 8_192),
    "claude-3-7": ModelProfile(200_000, 64_000),
    "claude-sonnet-4": ModelProfile(200_000, 64_000),
    "claude-opus-4": ModelProfile(200_000, 32_000),
    "claude-haiku-4": ModelProfile(200_000, 64_000),
    "gemini-2.0": ModelProfile(1_048_576, 8_192),
    "gemini-2.5": ModelProfile(1_048_576, 65_536),
    "command-r": ModelProfile(128_000, 4_000),
    "command-a": ModelProfile(256_000, 8_000),
    "anthropic.claude": ModelProfile(200_000, 8_192),
    "us.anthropic.claude": ModelProfile(200_000, 8_192),
    "amazon.nova": ModelProfile(300_000, 5_000),
    "meta.llama3": ModelProfile(128_000, 2_048),
}


def profile_for(name: str) -> ModelProfile:
    """The profile of the longest known prefix of `name` (ignoring a `provider/` prefix), or an empty one."""
    bare = name.rsplit("/", 1)[-1].lower()
    matches = [prefix for prefix in _PROFILES if bare.startswith(prefix)]
    return _PROFILES[max(matches, key=len)] if matches else ModelProfile()
