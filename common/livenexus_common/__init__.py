"""LiveNexus common: the worker ↔ operator contract and the command-line plumbing every program shares.

The bottom layer: the worker, the operator and the console import it; it imports none of them.
"""

__version__ = "0.1.0"
