"""Director: a zero-trust deployment and operations mesh over ZeroMQ CURVE."""

__version__ = "0.1.0"
__all__ = ["__version__"]
