"""Segment discovery and lane reading: which lanes exist, whose they are, whether their
writer lives, and draining their records into the statistics."""
