"""popcon: which installed Python libraries are really used, counted without spying on anyone.

Importing this package imports nothing else: the recorder that runs inside user processes is
``popcon.recorder`` (stdlib only), the collector is ``popcon.server`` (extra ``popcon[server]``).
"""

__version__ = "0.1.0"
