"""`gru-serve serve`: flags generated from Settings, so flags and GRU_SERVE_* variables agree."""

from __future__ import annotations

import argparse
import logging
import os

from service.settings import ENV_PREFIX, Settings


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the ONNX artifact over HTTP and websocket",
        description=f"Every flag can also be set as an environment variable {ENV_PREFIX}<NAME>; flags win.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        p.add_argument(
            flag,
            dest=name,
            default=None,
            metavar="VALUE",
            help=f"{field.description or name} (env {env})",
        )
    p.set_defaults(run=run_serve)


def load_settings(args: argparse.Namespace) -> Settings:
    from pydantic import ValidationError

    from service.cli import CliError

    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        raise CliError(f"--{name.replace('_', '-')}: {first['msg']}") from None


def ws_frame_limit(settings: Settings) -> int:
    """uvicorn's websocket message limit: twice the app's limit plus slack."""
    return 2 * settings.max_message_bytes + 64 * 1024


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.cli import CliError
    from service.logs import configure_logging
    from service.runtime import ArtifactError, DeviceError, Runtime
    from service.settings import unknown_env_names
    from service.shutdown import serve

    settings = load_settings(args)
    configure_logging(settings.log_level)  # JSON lines; uvicorn's loggers propagate to it
    for name in unknown_env_names(dict(os.environ)):
        logging.getLogger("gru_serve.settings").warning("%s is not a setting; ignored", name)
    try:
        runtime = Runtime(settings)  # fail before binding: a bad artifact is one line, exit 2
    except (ArtifactError, DeviceError) as e:
        raise CliError(str(e)) from None
    app = create_app(settings, runtime)
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
    )
    # SIGTERM/SIGINT: not ready, streams get their tokens, in-flight requests drain, exit 0
    serve(app, config, settings.shutdown_grace_s)
    return 0
