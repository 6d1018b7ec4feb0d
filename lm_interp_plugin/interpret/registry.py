"""The pass's extension points: attribution methods and per-example signals, each a registered class.

A new attribution method is one module under `interpret/attributions/` whose class subclasses
`AttributionMethod` and is decorated with `register_method`; a new per-example signal is one module under
`interpret/signals/` whose class follows `Signal` (subclass `BaseSignal`) and is decorated with
`register_signal`. The packages' ``__init__`` import every module, so registering is an import side effect;
the metrics a signal computes go into the metric table (`metric_names.register_metric`) from the same module.
`passes.run_pass` is a loop over what is registered and enabled.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .context import PassContext
    from .settings import InterpSettings


@runtime_checkable
class Detail(Protocol):
    """A signal's typed per-example detail; `to_dict` is its JSON form in the record."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class MethodAttribution:
    """What one attribution method gives for one request.

    Attributes:
        raw: ``prompt_len x target_len`` attribution matrix (numpy float).
        quantised: the paper's S of `raw` (the pass's L and eps, b = 0).
        metrics: the method's per-example scalars, already prefixed (``ig_instruction_importance``).
        detail: the method's typed detail for the record (None: nothing beyond the matrix).
    """

    raw: np.ndarray
    quantised: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)
    detail: Detail | None = None


class AttributionMethod:
    """An attribution method in Inseq's style: a name, the settings it reads, ``attribute(ctx)``.

    Class attributes:
        name: what ``interp_methods`` calls it (``gxi``, ``ig``).
        long_name: the record's ``params["method"]`` when it is the primary method.
        metric_prefix: prepended to the attribution metrics it produces ("" for the primary method).
        parameters: the `InterpSettings` fields it reads (documentation, and the report's settings view).
        has_completeness: whether it checks completeness (its attributions sum to the score difference).
        order: where its metrics and detail go in the record, among the signals' (see `BaseSignal.order`).
    """

    name: ClassVar[str]
    long_name: ClassVar[str]
    metric_prefix: ClassVar[str] = ""
    parameters: ClassVar[tuple[str, ...]] = ()
    has_completeness: ClassVar[bool] = False
    order: ClassVar[int] = 40
    record_field: ClassVar[str] = "extras"

    def attribute(self, ctx: PassContext) -> MethodAttribution:
        raise NotImplementedError

    def to_record(self, detail: Detail) -> dict[str, Any]:
        """Its detail's entries in the record's `record_field`."""
        return {self.name: detail.to_dict()}


@runtime_checkable
class Signal(Protocol):
    """A per-example signal: enabled by the settings, fed by the pass context, giving scalars and a detail.

    `needs` names activations of the primal forward from the capture vocabulary (`CAPTURE_POINTS`); the
    pass records them (at the target positions) and hands them over as ``ctx.captured[name]``. Before the
    primal forward, `prepare(ctx)` returns False (not for this request: no instruction, no FFN components),
    None, or a context-manager factory of its own to enter around the forward (the attention probe's).
    """

    name: str
    order: int
    needs: tuple[str, ...]
    record_field: str

    def enabled(self, settings: InterpSettings) -> bool: ...

    def prepare(self, ctx: PassContext) -> Callable[[], AbstractContextManager[Any]] | None | bool: ...

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], Detail | None]: ...

    def to_record(self, detail: Detail) -> dict[str, Any]: ...


class BaseSignal:
    """Defaults for a `Signal`: opt-in by name through ``interp_signals``, no activations, detail in
    ``extras[name]``.

    Class attributes:
        name: the signal's name (``interp_signals`` and its record key).
        order: position of its metrics and detail in the record (built-ins: attention 10, FFN 20,
            ablation 30, secondary attribution methods 40, deletion 50); new signals use > 50.
        needs: capture vocabulary names it reads from the primal forward.
        record_field: ``extras``, ``attention`` or ``ffn``: where its detail goes in the record.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 100
    needs: ClassVar[tuple[str, ...]] = ()
    record_field: ClassVar[str] = "extras"

    def enabled(self, settings: InterpSettings) -> bool:
        return self.name in settings.signal_names

    def prepare(self, ctx: PassContext) -> Callable[[], AbstractContextManager[Any]] | None | bool:
        """False to skip this request; else None, or a capture of its own around the primal forward."""
        return None

    def compute(self, ctx: PassContext) -> tuple[dict[str, float], Detail | None]:
        raise NotImplementedError

    def to_record(self, detail: Detail) -> dict[str, Any]:
        return {self.name: detail.to_dict()}


METHODS: dict[str, type[AttributionMethod]] = {}
SIGNALS: dict[str, Signal] = {}

M = TypeVar("M", bound=type[AttributionMethod])
S = TypeVar("S", bound=type)


def register_method(cls: M) -> M:
    """Class decorator: make an attribution method selectable by its name."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"attribution method {cls.name!r} is registered already ({METHODS[cls.name]})")
    METHODS[cls.name] = cls
    return cls


def register_signal(cls: S) -> S:
    """Class decorator: run this signal in every pass whose settings enable it."""
    signal = cls()
    if not isinstance(signal, Signal):
        raise TypeError(f"{cls.__name__} does not follow the Signal protocol (subclass BaseSignal)")
    known = SIGNALS.get(signal.name)
    if known is not None and type(known) is not cls:
        raise ValueError(f"signal {signal.name!r} is registered already ({type(known).__name__})")
    SIGNALS[signal.name] = signal
    return cls


def import_all(package: str, path: Iterable[str]) -> None:
    """Import every module of a registry package (`attributions`, `signals`): each registers itself, so a new
    method or signal is one new file."""
    for module in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        importlib.import_module(f"{package}.{module.name}")
