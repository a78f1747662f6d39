"""Statistics over drained events: per-series windows and histograms, counter rates, cache
states. Vectorized numpy; nothing here knows about files, HTTP or lanes."""
