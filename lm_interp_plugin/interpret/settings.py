"""What the interpretation pass computes: `InterpSettings`, one field per ``interp_<name>`` model argument."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..methods.attribution import Mode, Objective
from ..methods.importance import ImportanceParams

Choices = Literal["gold", "all"]
#: field metadata key of the settings that change how the values are computed (speed, memory, extra checks),
#: not the values: a record computed under other values of these is still the same computation and is reused
#: on resume, and the report does not compare them between runs
HOW = "how_not_what"
PRIMARY_METHOD = "gxi"


def _how(default: Any) -> Any:
    return field(default=default, metadata={HOW: True})


@dataclass
class InterpSettings:
    """What the interpretation pass computes; each field is a `--model_args` key of `interp-hf`.

    Attributes:
        L: quantisation levels of the normalised matrix (paper: 10).
        b: sparsification threshold for the scores (paper: 7).
        p: norm of the importance density (paper: 4).
        eps: the normaliser's epsilon (paper: 1e-7).
        objective: ``prob`` (the paper's gradient of the probability) or ``logprob``.
        mode: ``auto`` (cheaper of reverse/forward), ``reverse`` or ``forward``.
        chunk_size: VJPs/JVPs per batched pass (default: from `memory_budget`, else half the free memory on a
            GPU and at most 8 on a CPU, fewer for long prompts); halved and retried on out-of-memory.
        memory_budget: memory the batched derivative passes may use, e.g. ``8GB``, ``512MiB`` or bytes.
        checkpoint: activation checkpointing of the decoder layers in reverse mode (long prompts: less memory,
            one extra forward per chunk).
        fp32_check: half-precision models only: every `fp32_check`-th interpreted request (the first one
            included) is attributed again in float32 and the relative error goes into its record; 0 = never.
        attention: compute per-example instruction attention (layers x heads).
        ffn: compute per-example FFN concept activation (needs the FFN components of the model).
        ffn_k: number of principal components per layer for the FFN concepts.
        ffn_labeller: who names the FFN components' concepts: ``lexicon`` (word lists in the model's embedding
            space) or ``llm:PATH`` / ``llm:FOLDER::FILE.gguf`` (a local judge LM scoring each concept name).
            Either way a concept is reported per example only when it is valid on the model (its share is
            higher on its own interp_instruct items, AUC >= 0.65); the others are absent, with the reason.
        ablation: instruction ablation: the target's log-prob drop when the instruction is removed / replaced.
        methods: attribution methods by name, joined by ``+`` (``gxi+ig``; a comma would split lm-eval's
            model_args); gradient x input always runs first: it is the paper's score and its forward carries
            the other signals.
        ig: integrated gradients (zero baseline) as a second attribution method, with the paper's score on it
            (an alias of adding ``ig`` to `methods`).
        ig_steps: interpolation steps of integrated gradients.
        deletion: deletion curves (faithfulness) of each attribution method, against random orders.
        signals: optional per-example signals by name, joined by ``+`` (``entropy``); the built-in ones have
            their own switches (attention, ffn, ablation, deletion).
        choices: ``gold`` interprets the reference answer of multiple-choice docs (and every generation);
            ``all`` interprets every choice.
        store_matrices: keep the raw and quantised matrices in the records (they dominate the file size).
        reference: a reference model (hub id or folder; the base model when the tuned one is evaluated, or
            the other way round) for the ``reference_shift`` signal, which it turns on; same tokenizer.
        reference_gguf_file: a GGUF file inside the reference's folder or hub repository to load it from.
    """

    L: int = 10
    b: int = 7
    p: float = 4.0
    eps: float = 1e-7
    objective: Objective = "prob"
    mode: Mode = "auto"
    chunk_size: int | None = _how(None)
    memory_budget: str | None = _how(None)
    checkpoint: bool = _how(False)
    fp32_check: int = _how(50)
    attention: bool = True
    ffn: bool = True
    ffn_k: int = 8
    ffn_labeller: str = "lexicon"
    choices: Choices = "gold"
    store_matrices: bool = True
    ablation: bool = True
    methods: str = PRIMARY_METHOD
    ig: bool = False
    ig_steps: int = 32
    deletion: bool = False
    signals: str | None = None
    reference: str | None = None
    reference_gguf_file: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(getattr(self, f.name), str(f.type), "interp_" + f.name))
        try:  # its messages start with the parameter's name: "L (number of quantisation levels) must ..."
            ImportanceParams(L=self.L, b=self.b, p=self.p, eps=self.eps)
        except ValueError as err:
            raise ValueError(f"interp_{err}") from None  # the model_args key the user wrote
        allowed = {
            "objective": get_args(Objective),
            "mode": get_args(Mode),
            "choices": get_args(Choices),
        }
        for key, values in allowed.items():
            if getattr(self, key) not in values:
                raise ValueError(f"interp_{key}={getattr(self, key)!r} is not valid; use one of {values}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"interp_chunk_size must be a positive integer, got {self.chunk_size}")
        for key in ("ig_steps", "ffn_k", "L"):
            if getattr(self, key) < 1:
                raise ValueError(f"interp_{key} must be a positive integer, got {getattr(self, key)}")
        if self.fp32_check < 0:
            raise ValueError(
                f"interp_fp32_check must be 0 (never) or a positive N (every N-th request), "
                f"got {self.fp32_check}"
            )
        _ = self.memory_budget_bytes  # validates the size string
        self.methods = "+".join(self._method_names())
        self.ig = "ig" in self.method_names
        self.signals = "+".join(self._signal_names()) or None

    def _signal_names(self) -> list[str]:
        from .signals import SIGNALS  # the signals import this module for its type

        asked = [m.strip() for m in re.split(r"[+,]", self.signals or "") if m.strip()]
        unknown = [m for m in asked if m not in SIGNALS]
        if unknown:
            raise ValueError(f"interp_signals: unknown signal(s) {unknown}; registered: {', '.join(SIGNALS)}")
        return list(dict.fromkeys(asked))

    @property
    def signal_names(self) -> tuple[str, ...]:
        """The opt-in signals named by ``interp_signals``."""
        return tuple(self.signals.split("+")) if self.signals else ()

    def _method_names(self) -> list[str]:
        from .attributions import METHODS  # the methods import this module for its type

        asked = [m.strip() for m in re.split(r"[+,]", str(self.methods)) if m.strip()]
        if self.ig:
            asked.append("ig")
        unknown = [m for m in asked if m not in METHODS]
        if unknown:
            raise ValueError(
                f"interp_methods: unknown attribution method(s) {unknown}; registered: {', '.join(METHODS)}"
            )
        return list(dict.fromkeys([PRIMARY_METHOD, *asked]))

    @property
    def method_names(self) -> tuple[str, ...]:
        """The attribution methods of this pass, the primary (gradient x input) first."""
        return tuple(self.methods.split("+"))

    @property
    def memory_budget_bytes(self) -> int | None:
        return None if self.memory_budget in (None, "", "none", "None") else parse_bytes(self.memory_budget)

    @property
    def importance(self) -> ImportanceParams:
        return ImportanceParams(L=self.L, b=self.b, p=self.p, eps=self.eps)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], prefix: str = "interp_") -> InterpSettings:
        """Build from ``interp_<field>`` keyword arguments; unknown ``interp_`` keys get a did-you-mean
        error."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in kwargs.items():
            name = key[len(prefix) :]
            if name not in fields:
                options = [prefix + f for f in fields]
                guess = difflib.get_close_matches(key, options, n=1)
                hint = f" Did you mean {guess[0]!r}?" if guess else ""
                raise ValueError(
                    f"unknown model argument {key!r} for interp-hf.{hint} Valid: {', '.join(options)}"
                )
            values[name] = _coerce(value, str(fields[name].type), key)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: the `InterpSettings` fields that change how, not what, is computed (field metadata `HOW`)
HOW_NOT_WHAT = frozenset(f.name for f in dataclasses.fields(InterpSettings) if f.metadata.get(HOW))


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str | int) -> int:
    """``"8GB"``, ``"512MiB"``, ``"1.5gb"`` or a plain number of bytes -> bytes."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"interp_memory_budget={text!r} is not a size; write it like 8GB, 512MiB or 2000000000"
            )
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise ValueError(f"interp_memory_budget must be positive, got {text!r}")
    return value


_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _coerce(value: Any, annotation: str, key: str) -> Any:
    """`value` (a string from --model_args, or what lm-eval already parsed) as the field's type, strictly.

    Booleans are true/false/1/0 (any case); integers are whole numbers; a typo (``ture``) or a fraction for
    an integer (``1.5``) is an error naming the key, not a silent default.
    """
    optional = "None" in annotation
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "")):
        if optional:
            return None
        raise ValueError(f"{key} needs a value")
    if "bool" in annotation:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{key}={value!r} is not a boolean; write true, false, 1 or 0")
    if annotation.startswith("int"):
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{key}={value!r} is not an integer")
        if isinstance(value, (int, float)):
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError(f"{key}={value!r} is not an integer") from None
    if annotation.startswith("float"):
        if isinstance(value, bool):
            raise ValueError(f"{key}={value!r} is not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{key}={value!r} is not a finite number")
        return number
    if annotation.startswith("str") and not isinstance(value, str):
        return str(value)
    return value
