"""How ``popcon serve`` reads the ``JUPYTERHUB_*`` variables a Hub gives its services (the
real Hub round trip is in test_hub.py)."""

from __future__ import annotations

from faces import require_module
from repo import REPO_ROOT

from popcon.server.app import PopconServe
from popcon.server.web.hub import HUB_MODE, access_scopes, configure_from_hub, hub_service

HUB_ENV = {
    "JUPYTERHUB_SERVICE_NAME": "popcon",
    "JUPYTERHUB_API_TOKEN": "service-token",
    "JUPYTERHUB_CLIENT_ID": "service-popcon",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_SERVICE_PREFIX": "/services/popcon/",
    "JUPYTERHUB_SERVICE_URL": "http://127.0.0.1:10101",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/popcon/oauth_callback",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:services", "access:services!service=popcon"]',
}


def app(*argv: str) -> PopconServe:
    serve = PopconServe()
    serve.initialize(["--config", "/nonexistent/popcon_config.py", *argv])
    return serve


def test_standalone_without_hub_variables():
    assert hub_service({}) is None
    assert hub_service({"JUPYTERHUB_API_TOKEN": "x"}) is None  # a service without a URL
    serve = app()
    assert configure_from_hub(serve, {}) is None
    assert (serve.http, serve.base_url) == ("127.0.0.1:8138", "/")


def test_the_hub_says_where_to_listen_and_under_which_prefix():
    service = hub_service(HUB_ENV)
    assert service is not None
    assert (service.name, service.prefix, service.http) == (
        "popcon",
        "/services/popcon/",
        "127.0.0.1:10101",
    )
    serve = app()
    assert configure_from_hub(serve, HUB_ENV) == HUB_MODE
    assert (serve.http, serve.base_url) == ("127.0.0.1:10101", "/services/popcon/")


def test_flags_win_over_the_hub_and_open_means_open():
    serve = app("--http", "0.0.0.0:8138", "--open")
    assert configure_from_hub(serve, HUB_ENV) is None  # --open: nobody asks the Hub
    assert (serve.http, serve.base_url) == ("0.0.0.0:8138", "/services/popcon/")


def test_access_scopes_come_from_the_hub():
    assert access_scopes(HUB_ENV) == {"access:services", "access:services!service=popcon"}
    assert access_scopes({"JUPYTERHUB_SERVICE_NAME": "pc"}) == {"access:services!service=pc"}
    broken = {"JUPYTERHUB_OAUTH_ACCESS_SCOPES": "not json"}
    assert access_scopes(broken) == {"access:services!service=popcon"}


def test_serve_settings_use_a_hub_login_for_the_api_and_metrics(monkeypatch):
    require_module("jupyterhub", "pip install jupyterhub")
    for key, value in HUB_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("POPCON_API_TOKEN", "scrape-token-of-16")
    settings = app().serve_settings()
    assert settings.api_auth.mode == HUB_MODE
    assert settings.metrics_auth is settings.api_auth  # one OAuth state for both
    assert settings.http == ("127.0.0.1", 10101)
    assert settings.base_url == "/services/popcon/"
    routes = [route[0] for route in settings.api_auth.routes("/services/popcon/")]
    assert routes == ["/services/popcon/oauth_callback"]
    assert "access:services!service=popcon" in settings.api_auth.describe()
    opened = app("--metrics-open").serve_settings()
    assert opened.metrics_auth.mode == "open" and opened.api_auth.mode == HUB_MODE


def test_the_z2jh_example_is_consistent():
    """examples/z2jh-values.yaml: the service's flags are popcon's, and the UDP port the pods
    send to is the one the collector listens on, exposed and let through both policies."""
    yaml = require_module("yaml", "pip install PyYAML")
    values = yaml.safe_load((REPO_ROOT / "examples" / "z2jh-values.yaml").read_text())
    service = values["hub"]["services"]["popcon"]
    assert service["command"][:4] == ["python3", "-m", "popcon", "serve"]  # not on PATH
    serve = app(*service["command"][4:])
    udp_port = int(serve.udp.rsplit(":", 1)[1])
    http_port = int(serve.http.rsplit(":", 1)[1])
    assert service["url"] == f"http://hub:{http_port}"
    collector = values["singleuser"]["extraEnv"]["POPCON_COLLECTOR"]
    assert collector == f"udp://hub:{udp_port}"
    assert values["singleuser"]["extraEnv"]["POPCON_LABELS"].startswith("hub=")
    ports = {(p["port"], p["protocol"]) for p in values["hub"]["service"]["extraPorts"]}
    assert {(udp_port, "UDP"), (http_port, "TCP")} <= ports
    ingress = {
        (p["port"], p["protocol"])
        for rule in values["hub"]["networkPolicy"]["ingress"]
        for p in rule["ports"]
    }
    assert {(udp_port, "UDP"), (http_port, "TCP")} <= ingress
    egress = {
        (p["port"], p["protocol"])
        for rule in values["singleuser"]["networkPolicy"]["egress"]
        for p in rule["ports"]
    }
    assert (udp_port, "UDP") in egress
    (role,) = values["hub"]["loadRoles"].values()
    assert role["scopes"] == ["access:services!service=popcon"]
    assert set(role["users"]) == set(values["hub"]["config"]["Authenticator"]["admin_users"])
