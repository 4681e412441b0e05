"""Example domains: the payments domain the demo runs, and its traffic simulator."""
