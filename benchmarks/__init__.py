"""The engine benchmarks: measurements, not tests. Run `python -m benchmarks` from the repository root.

Sections (see README.md): `apply`, `load`, `bytes`, `appends`, `erase`. Nothing here asserts on a timing; each
figure is printed beside its target, marked ✓ or ✗.
"""
