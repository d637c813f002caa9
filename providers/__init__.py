"""Destinations. One module per vendor; each does ONE attempt and classifies the outcome.

Providers never sleep, loop or retry: `workers/retry.py` owns timing. They import `shared` only.
"""
