"""Loopback fake servers that speak the providers' wire formats, for the adapters' tests."""
