"""`gru-serve serve`: flags generated from Settings, so flags and GRU_SERVE_* variables agree."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic.fields import FieldInfo

from cli_common import CliError
from service.settings import ENV_PREFIX, Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown_default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return "empty"
    return str(value)


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the ONNX artifact over HTTP and websocket",
        description="Serve the ONNX artifact: REST /v1, websocket /v1/stream, the Open "
        f"Inference Protocol /v2, /metrics. Every flag is also an environment variable "
        f"{ENV_PREFIX}<NAME> (e.g. --max-horizon: {ENV_PREFIX}MAX_HORIZON); flags win. "
        "A bad value, a model that cannot be loaded or a port that cannot be bound ends "
        "with one line on stderr and exit 2.",
    )
    for name, field in Settings.model_fields.items():
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
        p.add_argument(
            _flag(name),
            dest=name,
            default=None,  # None = not given: the environment or the default applies
            choices=choices,
            metavar=None if choices else _metavar(name, field),
            help=f"{field.description} (default {_shown_default(field)}; env {ENV_PREFIX}{name.upper()})",
        )
    p.set_defaults(run=run_serve)


def _metavar(name: str, field: FieldInfo) -> str:
    kind = field.annotation
    if kind is bool:
        return "{true,false}"
    if name.endswith("_s"):
        return "SECONDS"
    return {int: "N", float: "X", Path: "FILE"}.get(kind, "TEXT")  # type: ignore[arg-type]


def _env_key(name: str) -> str:
    """The variable as the user spelled it (pydantic-settings matches names case-blind)."""
    wanted = ENV_PREFIX + name.upper()
    return next((k for k in os.environ if k.upper() == wanted), wanted)


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the flags given over the environment; an error names what the user set."""
    from pydantic import ValidationError

    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            if name in given:
                where = f"{_flag(name)} {given[name]}"
            elif name in Settings.model_fields:
                key = _env_key(name)
                where = f"{key}={os.environ.get(key, '')}"
            else:
                where = "settings"
            problems.append(f"{where}: {err['msg']}")
        raise CliError("; ".join(problems)) from None


def check_bindable(host: str, port: int) -> None:
    """Bind and release the address before the model loads: a port in use is one line, exit 2.

    Port 0 (the kernel picks one) always binds. SO_REUSEADDR as uvicorn sets it, so a port
    left in TIME_WAIT by a previous run is not reported.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            hint = (
                " (another process is using it: pick another --port)"
                if e.errno == errno.EADDRINUSE
                else ""
            )
            raise CliError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None


def ws_frame_limit(settings: Settings) -> int:
    """uvicorn's websocket message limit: twice the app's limit plus slack."""
    return 2 * settings.max_message_bytes + 64 * 1024


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app, load_runtimes
    from service.connections import timed_protocol
    from service.gc_policy import tune_for_serving
    from service.logs import configure_logging
    from service.probes import ProbeServer
    from service.repository import RepositoryError
    from service.runtime import ArtifactError, DeviceError
    from service.settings import unknown_env_names
    from service.shutdown import serve
    from service.state import app_state

    settings = load_settings(args)
    check_bindable(settings.host, settings.port)  # before the seconds of loading the model
    if settings.probe_port is not None:
        if settings.probe_port == settings.port != 0:
            raise CliError(f"--probe-port {settings.probe_port} is the main port: pick another")
        check_bindable(settings.host, settings.probe_port)
    configure_logging(settings.log_level)  # JSON lines; uvicorn's loggers propagate to it
    for name in unknown_env_names(dict(os.environ)):
        logging.getLogger("gru_serve.settings").warning("%s is not a setting; ignored", name)
    try:
        # Fail before binding: a bad artifact or repository layout is one line, exit 2.
        runtimes = load_runtimes(settings)
    except (ArtifactError, DeviceError, RepositoryError) as e:
        raise CliError(str(e)) from None
    app = create_app(settings, runtimes=runtimes)
    probes = None
    if settings.probe_port is not None:  # its own thread: probes never queue behind clients
        probes = ProbeServer(app_state(app), settings)
        try:
            probes.start()
        except OSError as e:
            where = f"{settings.host}:{settings.probe_port}"
            raise CliError(f"cannot listen on {where}: {e.strerror}") from None
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep the JSON logging configured above
        access_log=False,  # RequestContext writes the access log
        # Above the app's own limit: a frame over max_message_bytes reaches the app, which sends
        # the session's resume token before closing 1009. Only frames over this bound are cut
        # by uvicorn itself (1009, no token), so memory stays bounded.
        ws_max_size=ws_frame_limit(settings),
        # Idle, slow and half-open connections are closed (service/connections.py).
        http=timed_protocol(settings.request_timeout_s),
        # uvicorn types it int; it only hands it to call_later, so a float is what we mean.
        timeout_keep_alive=settings.keep_alive_timeout_s,  # type: ignore[arg-type]
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        # The main loop's heartbeat for the probe port's /healthz, at each tick (about 1 s).
        callback_notify=probes.beat if probes is not None else None,
        timeout_notify=0,
    )
    tune_for_serving()  # the models are loaded: what is alive now stays for the process
    # SIGTERM/SIGINT: not ready, streams get their tokens, in-flight requests drain, exit 0
    try:
        serve(app, config, settings.shutdown_grace_s)
    finally:
        if probes is not None:
            probes.stop()
    return 0
