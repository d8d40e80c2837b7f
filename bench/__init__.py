"""The benchmark (``make bench``): the service measured against do-nothing baselines on the same server.

``python -m bench`` starts the embedded stack, runs each measurement in ``bench/measure_*.py``
and writes a JSON report, a markdown table and a plot to ``bench/results/``. Every figure is a
ratio against a baseline measured in the same run, because absolute times on a shared machine drift.
"""
