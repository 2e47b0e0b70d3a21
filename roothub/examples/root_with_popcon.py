"""A root hub's ``jupyterhub_config.py`` that also serves popcon's dashboard (docs/roothub.md,
"A fleet with popcon"): the operators of every hub sign in once, at the root.

popcon's own example (examples/jupyterhub_config.py of this repository) sets up the managed
service, seen by the admins only; configure_root then makes this hub the fleet's login. The
children are named, so that every user may log in to them while popcon stays the admins'.
Set POPCON_EXAMPLE_ADMINS (popcon's example reads it) to the admins of the fleet.
"""

import os
from pathlib import Path

from roothub.root import configure_root

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

#: popcon's example configuration: a checkout of this repository, or a copy of the file.
POPCON_EXAMPLE = os.environ.get(
    "POPCON_EXAMPLE_CONFIG",
    str(Path(__file__).resolve().parents[2] / "examples" / "jupyterhub_config.py"),
)
load_subconfig(POPCON_EXAMPLE)  # noqa: F821 - provided by JupyterHub

c.JupyterHub.public_url = os.environ.get("ROOTHUB_EXAMPLE_PUBLIC_URL", "https://hub.example.org/")
configure_root(
    c,
    registration_tokens=[os.environ["ROOTHUB_REGISTRATION_TOKEN"]],
    children=os.environ.get("ROOTHUB_EXAMPLE_CHILDREN", "hub-a.example.org").split(","),
)
