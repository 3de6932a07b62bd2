"""Service settings: environment variables `GRU_SERVE_<NAME>` == CLI flags `--<name>`.

One source of truth: `gru-serve serve` builds its flags from these fields, so the two can
never drift. Invalid values fail fast at start-up with the field's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GRU_SERVE_"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "artifacts" / "gru.onnx"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Network and process
    host: str = Field("127.0.0.1", description="interface to bind")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="lowest level of the JSON log lines on stderr"
    )
    access_log: bool = Field(True, description="one structured log line per request")
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="seconds in-flight work gets to finish after SIGTERM"
    )

    # Connections and probes (service/connections.py, service/probes.py)
    probe_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of a second listener answering only /healthz, /readyz and /metrics, "
        "apart from the main port's clients (unset: off; 0 picks a free one)",
    )
    loop_stall_s: float = Field(
        10.0,
        gt=0,
        description="seconds the main event loop may go without a turn before the probe "
        "port's /healthz answers 503",
    )
    keep_alive_timeout_s: float = Field(
        5.0,
        gt=0,
        description="seconds a connection may sit idle, before its first request or between "
        "requests, before the server closes it",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="seconds a request's head and body may take to arrive, from its first "
        "byte; a slower one gets 408 and its connection is closed",
    )
    ws_ping_interval_s: float = Field(
        20.0, gt=0, description="seconds between the server's pings on an open websocket"
    )
    ws_ping_timeout_s: float = Field(
        20.0,
        gt=0,
        description="seconds a websocket may take to answer a ping; then it is closed "
        "(a half-open connection)",
    )

    # Model and runtime
    model_path: Path = Field(
        DEFAULT_MODEL,
        description="the ONNX artifact to serve, or a model repository: a directory of "
        "<name>/<version>/model.onnx",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="where the model runs; auto: CUDA when a session can use it, else CPU"
    )
    intra_op_threads: int = Field(
        1, ge=0, description="onnxruntime intra-op threads (0 = ORT default)"
    )
    inter_op_threads: int = Field(
        1, ge=0, description="onnxruntime inter-op threads (0 = ORT default)"
    )
    allow_spinning: bool = Field(False, description="let ORT threads spin between runs")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimisation level"
    )

    # Dynamic batching
    max_batch_rows: int = Field(256, ge=1, description="rows per onnxruntime run")
    max_wait_us: int = Field(
        500, ge=0, description="microseconds an idle batcher waits for more rows (0: never)"
    )
    max_queue_rows: int = Field(4096, ge=1, description="queued rows before new requests get 503")
    queue_deadline_ms: float = Field(
        250,
        ge=0,
        description="refuse a request at once (503) when the queue would hold it longer than "
        "this, judged by the recent pace of onnxruntime runs (0: off)",
    )

    # Input limits
    max_series_length: int = Field(4096, ge=1, description="observations per series or item")
    max_horizon: int = Field(512, ge=1, description="forecast steps per request or stream fork")
    max_items: int = Field(256, ge=1, description="series or items per request")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="request body limit (413)")
    max_quantiles: int = Field(
        32, ge=1, le=255, description="quantile levels per request or stream (a token holds 255)"
    )
    max_hidden_sequence_values: int = Field(
        1_000_000,
        ge=1,
        description="numbers a /v1/hidden response with return_sequence may hold (T x (L x H + O) summed over items)",
    )

    # Streaming
    token_secret: SecretStr | None = Field(None, description="HMAC key for resume tokens")
    max_sessions: int = Field(
        1024, ge=1, description="open stream sessions; more are closed with 1013"
    )
    stream_states: Literal["auto", "device", "host"] = Field(
        "auto",
        description="where stream sessions keep their hidden states between steps; device: one "
        "slot buffer on the model's device, stepped in place (needs a cuda-target artifact); "
        "host: an array per session; auto: device when a cuda-target artifact runs on CUDA",
    )
    session_idle_timeout_s: float = Field(
        300.0, gt=0, description="seconds a silent stream is kept; then its token and a close"
    )
    max_steps_per_message: int = Field(
        256, ge=1, description="observations in one stream step message"
    )
    max_queued_steps: int = Field(
        1024, ge=1, description="steps a stream may have waiting; then its socket is not read"
    )
    max_message_bytes: int = Field(
        1024 * 1024, ge=256, description="size of one stream message; larger ones close 1009"
    )
    max_stream_errors: int = Field(
        10, ge=1, description="consecutive bad messages before a stream is closed (1008)"
    )

    # Operations
    api_keys: str = Field("", description="API keys, comma-separated (empty: auth off)")
    cors_origins: str = Field(
        "", description="origins a browser may call from, comma-separated (empty: no CORS)"
    )

    @field_validator("api_keys", "cors_origins")
    @classmethod
    def _strip(cls, v: str) -> str:
        return ",".join(p.strip() for p in v.split(",") if p.strip())

    @property
    def api_key_list(self) -> list[str]:
        return [k for k in self.api_keys.split(",") if k]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o for o in self.cors_origins.split(",") if o]


def unknown_env_names(environ: dict[str, str]) -> list[str]:
    """GRU_SERVE_* variables that name no setting: most likely typos, silently unused otherwise."""
    fields = set(Settings.model_fields)
    return sorted(
        k
        for k in environ
        if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() not in fields
    )
