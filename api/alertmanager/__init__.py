"""Alertmanager (and Grafana alerting) webhooks as incident lifecycles: request schemas and the mapping."""
