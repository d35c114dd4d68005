"""Benchmark (`avatar bench`) and quality evaluation (`avatar eval`) of the whole product.

``bench`` times a fixed set of spoken turns in-process and through the HTTP service; ``eval`` measures
speech recognition, speech synthesis, lip sync and face robustness. Both write JSON + Markdown (+ PNG
plots for bench) under ``bench/results/`` and compare the figures with ``bench/thresholds.toml``.
"""
