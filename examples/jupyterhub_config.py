"""JupyterHub configuration with popcon as a managed service (see docs/jupyterhub.md).

Add these lines to your own ``jupyterhub_config.py`` (or load this file from it with
``load_subconfig``). The Hub then:

1. starts ``popcon serve`` and proxies ``/services/popcon/`` to it: the dashboard and the API
   are behind a Hub login (OAuth), and only holders of the scope
   ``access:services!service=popcon`` get in;
2. gives that scope to the admins only, through a role;
3. tells every single-user server (and so every kernel and terminal in it) where to send its
   records, with a ``hub=`` label that keeps this hub apart from others in a fleet.

The single-user environment itself must be enabled once, in the image or the environment
(``popcon enable --python /path/to/python``); nothing has to run when a server starts.

The values below are the defaults for a Hub on one machine. Each can be overridden with an
environment variable of the Hub process (the test suite uses that to pick free ports and a
temporary database).
"""

import os
import sys

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

#: The name of this hub in the data: the ``hub=`` label of every record its users send.
HUB_NAME = os.environ.get("POPCON_EXAMPLE_HUB_NAME", "research")
#: Where the collector receives records (UDP) and serves the dashboard (HTTP, via the proxy).
POPCON_UDP = os.environ.get("POPCON_EXAMPLE_UDP", "127.0.0.1:8137")
POPCON_HTTP_PORT = int(os.environ.get("POPCON_EXAMPLE_HTTP_PORT", "8138"))
POPCON_DB = os.path.abspath(os.environ.get("POPCON_EXAMPLE_DB", "popcon.sqlite"))
#: The Hub's admins: the only users who may see popcon.
ADMINS = set(filter(None, os.environ.get("POPCON_EXAMPLE_ADMINS", "admin").split(",")))

# -- 1. popcon as a managed service ------------------------------------------------------------
# The Hub starts the command, passes it JUPYTERHUB_* variables (so popcon serves under
# /services/popcon/, listens at the service URL and logs users in through the Hub) and
# proxies /services/popcon/ to the URL.
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
        # A Prometheus outside the Hub reads /metrics with this token (Authorization: Bearer);
        # leave it unset and only Hub logins (and Hub tokens with the scope) may read.
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
