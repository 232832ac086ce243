"""tailseal: the log shipping agent for ephemeral, immutable hosts.

Pipeline (see docs and DESIGN.md): sources -> transforms -> buffer (WAL) -> sinks -> collector.
"""

__version__ = "0.1.0"
