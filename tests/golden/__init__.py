"""Golden files: the exact JSON each renderer produces for the sample events in samples.py."""
