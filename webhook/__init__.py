"""spreadguard: an admission webhook that keeps deep-learning training highly available."""

__version__ = "0.1.0"
