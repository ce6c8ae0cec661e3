"""DKIM: the signer, key generation, and the worker-process signing pool."""
