"""jupyterhub-roothub: one JupyterHub, the root, signs users in to many others, its children."""

__version__ = "0.1.0"
