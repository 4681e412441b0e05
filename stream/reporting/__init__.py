"""Reporting: the last consumer of every flow (drift, performance, retraining decisions) as one HTML file."""
