"""Side by side: contextfold beside the systems users would pick instead, on the same work, in one run.

`python -m benchmarks.versus [--quick] [--only NAME] [--json PATH]`. Llama Stack and the OpenHands SDK run in Python
3.12 virtual environments of their own, built once and cached under `benchmarks/results/venvs/` (see `_venv.py`).
"""
