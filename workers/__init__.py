"""Celery workers: fan-out, delivery, the sweeper, and the retry policy that decides all timing."""
