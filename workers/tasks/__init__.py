"""Celery tasks: `fanout` (event -> delivery rows), `deliver` (a batch of sends), `sweep` (beat: recovery)."""
