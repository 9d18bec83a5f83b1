"""The usagelog demo: an example Flask API, simulated users, and the runner behind ``usagelog demo``."""
