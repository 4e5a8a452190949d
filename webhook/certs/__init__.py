"""Certificates: development files made with ``cryptography`` and the in-cluster bootstrap."""
