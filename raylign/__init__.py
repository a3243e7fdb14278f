"""raylign: iterative preference alignment of healthcare assistants on Ray."""

__version__ = "0.1.0"
