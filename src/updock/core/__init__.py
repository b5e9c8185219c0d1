"""The pure core: values and decisions, no I/O.

Nothing here imports engines, registry or systemd.
"""
