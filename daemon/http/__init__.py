"""The loopback HTTP endpoint (/status, /healthz) and the Prometheus /metrics rendering."""
