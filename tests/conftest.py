"""Shared fixtures: the stores (both backends) and a guard against real network calls."""

from .store_fixtures import *  # noqa: F403
