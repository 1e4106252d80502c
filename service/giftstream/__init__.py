"""giftstream: real-time gifting for live streams."""

__version__ = "0.1.0"
__all__ = ["__version__"]
