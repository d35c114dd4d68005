"""Measures of quality computed from the product's outputs alone (lip sync, word error rate)."""
