"""The runtime: one onnxruntime session, its provider choice, validation and warm-up.

Nothing here knows about HTTP; the inference core calls `run` from a worker thread.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.contract import (
    INPUT_H0,
    INPUT_LENS,
    INPUT_X,
    OPSET,
    OUTPUT_HN,
    OUTPUT_HSEQ,
    OUTPUT_Y,
    ArtifactMeta,
    empty_slot_feeds,
    takes_slots,
)
from export.placement import read_placement, record_placement
from service.settings import Settings

log = logging.getLogger("gru_serve.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Full float32 matrix products: TF32 (the provider's default on Ampere and newer) keeps 10
# mantissa bits, errors near 1e-3, and the CUDA graph must give the CPU's numbers.
CUDA_OPTIONS = {"use_tf32": "0"}


def provider_chain(providers: list[str]) -> list:
    """The providers for ort.InferenceSession, CUDA with CUDA_OPTIONS."""
    return [(p, CUDA_OPTIONS) if p == CUDA else p for p in providers]


_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ArtifactError(RuntimeError):
    """The model file is missing, corrupt or not a gru-serve artifact."""


class DeviceError(RuntimeError):
    """The requested device cannot be had."""


def cuda_device_count() -> int:
    """GPUs the CUDA driver sees, without touching onnxruntime (whose failed CUDA load logs errors)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


@dataclass(frozen=True)
class Placement:
    provider: str  # the provider the session really runs on (session.get_providers()[0])
    recurrent_nodes: str  # where the recurrence (GRU or Scan nodes) runs
    # Graph nodes per provider (subgraph bodies included) as onnxruntime placed them; empty
    # when this onnxruntime cannot report placement.
    nodes: dict[str, int] = field(default_factory=dict)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = Path(settings.model_path)
        self.session, self.meta = self._load()
        # A cuda-target graph also takes the stream slot buffer: plain runs feed it empty.
        self.takes_slots = takes_slots(self.session)
        self._slot_feeds = (
            empty_slot_feeds(self.meta.num_layers, self.meta.hidden_size)
            if self.takes_slots
            else {}
        )
        self.placement = self._placement()
        if self.placement.provider == CUDA and (
            self.placement.nodes.get(CPU) or self.placement.recurrent_nodes == CPU
        ):
            self._refuse_partial_cuda()
        log.info(
            "model %s %s (%s, target %s) on %s; recurrent nodes on %s; nodes per provider %s",
            self.meta.name,
            self.meta.version,
            self.meta.variant,
            self.meta.target,
            self.placement.provider,
            self.placement.recurrent_nodes,
            self.placement.nodes or "not reported",
        )

    # ---- loading -------------------------------------------------------------------------
    def _session_options(self) -> ort.SessionOptions:
        s = self.settings
        so = ort.SessionOptions()
        # A small recurrent model gains nothing from wide thread pools; one thread per run
        # keeps latency flat and leaves the other cores to the event loop and other runs.
        so.intra_op_num_threads = s.intra_op_threads
        so.inter_op_num_threads = s.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = _OPT_LEVELS[s.graph_optimization]
        spin = "1" if s.allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        so.log_severity_level = 3
        record_placement(so)  # read back in _placement: which nodes really run where
        return so

    def _providers(self) -> list[str]:
        want = self.settings.device
        if want == "cpu":
            return [CPU]
        has_cuda = CUDA in ort.get_available_providers() and cuda_device_count() > 0
        if want == "cuda" and not has_cuda:
            raise DeviceError(
                "device=cuda but no CUDA GPU is usable (no driver or no device, or an onnxruntime "
                "build without the CUDA provider); use device=auto or device=cpu"
            )
        return [CUDA, CPU] if has_cuda else [CPU]

    def _load(self) -> tuple[ort.InferenceSession, ArtifactMeta]:
        if not self.path.is_file():
            raise ArtifactError(f"model file {self.path} does not exist")
        providers = self._providers()
        if CUDA in providers and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from the onnxruntime-gpu[cuda,cudnn] wheels, if present
        try:
            session = ort.InferenceSession(
                str(self.path),
                self._session_options(),
                providers=provider_chain(providers),
            )
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            # ORT's message may span lines (and end with one): the start-up error stays one line.
            reason = " ".join(str(e).split())
            raise ArtifactError(f"{self.path} is not a loadable ONNX model: {reason}") from None
        if self.settings.device == "cuda" and session.get_providers()[0] != CUDA:
            raise DeviceError(
                "device=cuda but onnxruntime fell back to the CPU (CUDA/cuDNN libraries missing?)"
            )
        meta = self._validate(session)
        return session, meta

    def _validate(self, session: ort.InferenceSession) -> ArtifactMeta:
        try:
            meta = ArtifactMeta.from_props(session.get_modelmeta().custom_metadata_map)
        except ValueError as e:
            raise ArtifactError(f"{self.path}: {e}") from None
        if meta.opset != OPSET:
            raise ArtifactError(
                f"{self.path}: opset {meta.opset}, this server serves opset {OPSET}"
            )
        if meta.output_size != meta.input_size:
            # Forecasts feed each prediction back as the next input (the batcher's rollout):
            # a head of another width cannot roll out, and would fail every row it shares a
            # run with. Such an artifact is not a gru-serve forecaster: refuse it here.
            raise ArtifactError(
                f"{self.path}: output_size {meta.output_size} != input_size {meta.input_size}; "
                "gru-serve forecasts by feeding each prediction back as the next input, so the "
                "head must predict the next observation (output_size == input_size)"
            )
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        expected = {
            INPUT_X: (meta.input_size, "tensor(float)"),
            INPUT_H0: (meta.hidden_size, "tensor(float)"),
            INPUT_LENS: (None, "tensor(int32)"),
        }
        for name, (last_dim, dtype) in expected.items():
            if name not in inputs:
                raise ArtifactError(f"{self.path}: graph input {name!r} is missing")
            if inputs[name].type != dtype:
                raise ArtifactError(
                    f"{self.path}: input {name!r} is {inputs[name].type}, expected {dtype}"
                )
            if last_dim is not None and inputs[name].shape[-1] != last_dim:
                raise ArtifactError(
                    f"{self.path}: input {name!r} shape {inputs[name].shape} disagrees with metadata"
                )
        if not {OUTPUT_Y, OUTPUT_HN, OUTPUT_HSEQ} <= outputs:
            raise ArtifactError(
                f"{self.path}: graph outputs {sorted(outputs)} lack one of {OUTPUT_Y}, {OUTPUT_HN}, {OUTPUT_HSEQ}"
            )
        return meta

    def _placement(self) -> Placement:
        provider = self.session.get_providers()[0]
        placed = read_placement(self.session)
        if placed is not None:
            recurrent = CPU if CPU in placed.recurrent_providers() else provider
            return Placement(provider, recurrent, placed.counts())
        # This onnxruntime cannot report placement: infer the one known case.
        recurrent = provider
        if provider == CUDA and self.meta.variant == "cho2014" and self.meta.target == "cpu":
            # cuDNN only implements linear_before_reset=1: ORT runs these GRU nodes on the CPU
            # with copies in and out (DESIGN.md section 2).
            recurrent = CPU
            log.warning(
                "provider is CUDA but this cho2014 model's GRU nodes run on the CPU "
                "(cuDNN supports only linear_before_reset=1); export the cuda target "
                "(gru-serve export --target cuda) or the cudnn variant for GPU recurrence"
            )
        return Placement(provider, recurrent)

    def _refuse_partial_cuda(self) -> None:
        """Never claim CUDA while nodes run on the CPU: device=cuda stops, auto serves on the CPU."""
        placed = read_placement(self.session)
        what = (
            f"{self.placement.nodes[CPU]} node(s) ({', '.join(placed.ops_on(CPU))})"
            if placed and self.placement.nodes.get(CPU)
            else "the GRU node(s)"
        )
        advice = (
            f"{what} of {self.path} would run on the CPU under CUDA; for GPU serving export the "
            "cuda target of its checkpoint (gru-serve export --target cuda) and serve that file"
        )
        if self.settings.device == "cuda":
            raise DeviceError(f"device=cuda but {advice}")
        log.warning("%s; serving on the CPU instead", advice)
        self.session = ort.InferenceSession(
            str(self.path), self._session_options(), providers=[CPU]
        )
        self.placement = self._placement()

    # ---- running -------------------------------------------------------------------------
    def run(
        self, x: np.ndarray, h0: np.ndarray, lens: np.ndarray, want_seq: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """x [T, B, F], h0 [L, B, H], lens [B] -> y [T, B, O], h_n [L, B, H], h_seq [T, L, B, H] | None."""
        feeds = {INPUT_X: x, INPUT_H0: h0, INPUT_LENS: lens, **self._slot_feeds}
        if want_seq:
            y, h_n, h_seq = self.session.run([OUTPUT_Y, OUTPUT_HN, OUTPUT_HSEQ], feeds)
            return y, h_n, h_seq
        y, h_n = self.session.run([OUTPUT_Y, OUTPUT_HN], feeds)  # skipping h_seq saves a copy
        return y, h_n, None

    def warmup(self, rounds: int = 3) -> float:
        """Run representative shapes once so first requests don't pay allocation; returns seconds."""
        m = self.meta
        start = time.perf_counter()
        for _ in range(rounds):
            for T, B in ((1, 1), (1, 16), (32, 4)):
                self.run(
                    np.zeros((T, B, m.input_size), np.float32),
                    np.zeros((m.num_layers, B, m.hidden_size), np.float32),
                    np.full(B, T, np.int32),
                )
        return time.perf_counter() - start
