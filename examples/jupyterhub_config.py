"""JupyterHub configuration with popcon as a managed service (see docs/jupyterhub.md).

A whole ``jupyterhub_config.py`` for a Hub on one machine: load it from yours with
``load_subconfig("/path/to/popcon/examples/jupyterhub_config.py")``, or copy what you need.
tests/systems/test_hub.py runs a real Hub with this file loaded as it is; the test only adds
what a test needs (free ports, temporary paths, its dummy authenticator and simple spawner).

The values are the defaults for a Hub on one machine; each ``POPCON_EXAMPLE_*`` variable of the
Hub's environment overrides one (the test uses them to pick free ports and a temporary
database). The single-user environment must be enabled once: ``popcon enable --python
/path/to/its/python`` (nothing has to run when a server starts).
"""

import os
import sys

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

#: The name of this hub in the data: the ``hub=`` label of every record its users send.
HUB_NAME = os.environ.get("POPCON_EXAMPLE_HUB_NAME", "research")
#: Where the collector receives records (UDP, from the single-user servers on this machine)
#: and serves the dashboard and API (HTTP, reached through the Hub's proxy only).
POPCON_UDP = os.environ.get("POPCON_EXAMPLE_UDP", "127.0.0.1:8137")
POPCON_HTTP_PORT = int(os.environ.get("POPCON_EXAMPLE_HTTP_PORT", "8138"))
#: The collector's database: beside the Hub's own state (its jupyterhub.sqlite, cookie secret).
POPCON_DB = os.environ.get("POPCON_EXAMPLE_DB", "/srv/jupyterhub/popcon.sqlite")
#: The Hub's admins: the only users who may see popcon.
ADMINS = set(filter(None, os.environ.get("POPCON_EXAMPLE_ADMINS", "admin").split(",")))

# -- 0. the Hub itself ------------------------------------------------------------------------
# Who logs in: the machine's users (PAM, the default). Where their servers run: as their own
# processes on this machine (LocalProcessSpawner, the default), started as `jupyterhub-singleuser`
# from the Hub's PATH. Those servers, and every kernel in them, run in the environment that
# command and the kernel specs name: enable the recorder there (docs/jupyterhub.md).
c.JupyterHub.authenticator_class = "pam"
c.JupyterHub.spawner_class = "localprocess"
# The proxy's public address (port 8000 on every interface); the Hub's own API stays on
# loopback, where the proxy and the single-user servers reach it.
c.JupyterHub.bind_url = "http://:8000"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:8081"

# -- 1. popcon as a managed service ------------------------------------------------------------
# The Hub starts the command with its JUPYTERHUB_* variables (so popcon serves under
# /services/popcon/, listens at the service URL and logs visitors in through the Hub) and the
# proxy sends /services/popcon/ to the URL. `sys.executable -m popcon`: the Hub's own Python,
# where popcon[server] is installed, whatever PATH holds.
c.JupyterHub.services = [
    {
        "name": "popcon",
        "url": f"http://127.0.0.1:{POPCON_HTTP_PORT}",
        "command": [
            sys.executable,
            "-m",
            "popcon",
            "serve",
            f"--udp={POPCON_UDP}",
            f"--db={POPCON_DB}",
        ],
        # A service gets only the variables named here, not the Hub's whole environment: the
        # API token (for Prometheus and for `popcon top --server ...` without a Hub login)
        # comes from the Hub's environment when it is set there. Leave it unset and only Hub
        # logins and Hub tokens with the scope below may read.
        "environment": {
            key: os.environ[key] for key in ("POPCON_API_TOKEN",) if os.environ.get(key)
        },
        # It is the site's own service: no "authorize popcon?" page for the admins.
        "oauth_no_confirm": True,
    },
]

# -- 2. who may look: the admins only ---------------------------------------------------------
# The scope access:services!service=popcon is the whole permission. The built-in admin role
# already holds access:services; this role names the one scope popcon needs, so widening
# access later is one line (add users or groups here), never "make them admin".
c.Authenticator.admin_users = ADMINS
c.JupyterHub.load_roles = [
    {
        "name": "popcon-viewers",
        "description": "See the popcon dashboard and API (which libraries are used)",
        "scopes": ["access:services!service=popcon"],
        "users": sorted(ADMINS),
    },
]

# -- 3. where single-user servers send their records ------------------------------------------
# Every process of a single-user server inherits these: kernels, terminals, scripts.
# POPCON_LABELS keeps this hub apart from others when several report to one Prometheus.
c.Spawner.environment = {
    "POPCON_COLLECTOR": f"udp://{POPCON_UDP}",
    "POPCON_LABELS": f"hub={HUB_NAME}",
}
