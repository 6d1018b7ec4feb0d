"""`interp-hf`: lm-eval's HF model, answering exactly as `hf` does, plus one interpretation pass per request.

The stock answers come from `HFLM` unchanged (same batching, same SDPA path), so accuracy is identical to
`--model hf`. Afterwards every selected request gets one interpretation pass (`interpret.build_pass`) on its
(context, continuation) or (context, generation), tokenised exactly as HFLM scored it. The pass's scalars are
attached to the request (`tasks.RequestTag.output`), where `InterpTask` picks them up for the samples; the
full record is appended to ``<records_dir>/interp_records_<task>.jsonl`` as soon as it exists, and a rerun
with the same records_dir reuses finished records instead of recomputing them (resume, `records.RecordStore`),
but only a record of the same computation: same request, same prompt and target token ids, same model identity
(weights, config, tokenizer hashed) and same settings. Each batch logs how many records were reused, computed
and recomputed, and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import CacheHook
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.utils import sanitize_model_name
from tqdm import tqdm

from .. import metric_names as names
from ..fingerprint import identity_hash, model_fingerprint
from ..interpret.builder import build_pass
from ..interpret.encoding import encode_pair
from ..interpret.settings import HOW_NOT_WHAT, InterpSettings
from ..interpret.signals.contrastive import FOIL
from ..interpret.signals.contrastive import Contrastive as _Contrastive
from ..interpret.signals.reference_shift import REFERENCE
from ..records import RECORDS_DIR_KEY, InterpRecord, RecordStore
from ..spans import SPECIAL, label_tokens, token_offsets, truncated_offsets
from .choices import Foil, foils
from .model_checks import check_model, check_records_dir
from .reference import Reference, load_reference, with_reference_signal
from .tasks import tag_of
from .verify import logprob_mismatch, metrics_mismatch

CONTRASTIVE = _Contrastive.name

logger = logging.getLogger(__name__)

RECORDS_DIR_ENV = "LM_INTERP_RECORDS_DIR"


class CacheNotSupportedError(RuntimeError):
    """lm-eval's response cache would answer requests without the interpretation pass."""


@register_model("interp-hf")
class InterpHFLM(HFLM):
    """HFLM plus the interpretation pass. Extra `--model_args`: ``records_dir`` and ``interp_<setting>``
    (see `InterpSettings`), e.g. ``interp_b=7,interp_objective=logprob,interp_choices=all``."""

    def __init__(self, pretrained: Any, records_dir: str | None = None, **kwargs: Any) -> None:
        interp_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("interp_")}
        self.interp_settings = InterpSettings.from_kwargs(with_reference_signal(interp_kwargs))
        self.pretrained_name = pretrained if isinstance(pretrained, str) else type(pretrained).__name__
        if isinstance(pretrained, str) and kwargs.get("gguf_file"):  # the model is the file, not its folder
            self.pretrained_name = str(Path(pretrained) / str(kwargs["gguf_file"]))
        self.records_dir = Path(
            records_dir
            or os.environ.get(RECORDS_DIR_ENV)
            or Path("lm_interp_records") / sanitize_model_name(self.pretrained_name)
        )
        check_records_dir(self.records_dir)  # before the model loads, not after the whole pass
        super().__init__(pretrained=pretrained, **kwargs)
        self._shard_across_cpu_processes()
        _follow_lm_eval_logging()
        check_model(self.model, self.tokenizer, self.pretrained_name)  # once, before the long passes
        self.reference = self._load_reference(kwargs)
        self._foils: dict[int, Foil | str] = {}
        self.fingerprint = self._fingerprint(kwargs)
        self.store = RecordStore(
            self.records_dir, rank=self.rank, world_size=self.world_size, verify=metrics_mismatch
        )
        self.interpreter = build_pass(
            self.model,
            self.tokenizer,
            self.interp_settings,
            ffn_cache_dir=self.records_dir / "ffn_components",
            model_identity=f"{self.pretrained_name}@{self.fingerprint['revision']}",
        )
        if self.reference is not None:
            self.interpreter.resources[REFERENCE] = self.reference.model
        self._n_interpreted = 0  # requests interpreted by this process (picks the float32-checked ones)
        self._fp32_errors: list[float] = []
        logger.info("interp-hf: interpretation records go to %s", self.records_dir)

    @property
    def _half_precision(self) -> bool:
        return next(self.model.parameters()).dtype in (torch.float16, torch.bfloat16)

    def _shard_across_cpu_processes(self) -> None:
        """Data parallel on CPUs under ``torchrun``/``accelerate`` (``ACCELERATE_USE_CPU=1``).

        HFLM turns data parallel on only with more than one CUDA device; on CPU processes it would leave every
        rank running every request and writing the same record file. Shard as HFLM does on GPUs: lm-eval
        then splits the documents by rank and gathers the per-sample metrics itself.
        """
        accelerator = getattr(self, "accelerator", None)
        if accelerator is None or accelerator.num_processes <= 1 or self._world_size > 1:
            return
        if accelerator.device.type != "cpu":
            return
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        if self._rank == 0:
            logger.info("interp-hf: data parallel over %d CPU processes", self._world_size)

    # ------------------------------------------------------------------ lm-eval entry points
    def set_cache_hook(self, cache_hook: CacheHook) -> None:
        if type(cache_hook).__name__ == "CacheHook" and getattr(cache_hook, "dbdict", None) is not None:
            raise CacheNotSupportedError(
                "--use_cache cannot be combined with --model interp-hf: lm-eval's response cache answers "
                "cached requests without calling the model (its key has no model identity, so a cache filled "
                "by --model hf would answer too), and those requests would silently get no interpretation. "
                "Drop --use_cache: interp-hf resumes by itself from the records in "
                f"{self.records_dir} (rerun the same command)."
            )
        super().set_cache_hook(cache_hook)

    def get_model_info(self) -> dict:
        """lm-eval's model info plus the absolute records folder: lm-eval writes it into the results file's
        ``config``, so `lm-interp compare` finds the records wherever ``records_dir`` pointed."""
        return {**super().get_model_info(), RECORDS_DIR_KEY: str(self.records_dir.resolve())}

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        results = super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        answers = {id(req): float(result[0]) for req, result in zip(requests, results)}
        # the contrastive signal needs each gold answer's best other choice: a separate request of the doc
        self._foils = foils(requests, results) if CONTRASTIVE in self.interp_settings.signal_names else {}
        self._interpret_all(requests, [req.args[1] for req in requests], disable_tqdm, answers)
        return results

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        results = super().generate_until(requests, disable_tqdm=disable_tqdm)
        self._interpret_all(requests, list(results), disable_tqdm)
        return results

    # ------------------------------------------------------------------ the interpretation side
    def _fingerprint(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The model's identity (`fingerprint.model_fingerprint`: weights, config and tokenizer hashed), the
        settings, and the hashes that decide whether a stored record may be reused."""
        fingerprint = model_fingerprint(
            self.model, self.tokenizer, revision=kwargs.get("revision", "main"), name=self.pretrained_name
        )
        settings = self.interp_settings.to_dict()
        what = {k: v for k, v in settings.items() if k not in HOW_NOT_WHAT}
        model_hash = identity_hash(fingerprint)
        settings_hash = identity_hash({"settings": what}, ignore=())
        identity = {"model": model_hash, "settings": settings_hash, "plugin": fingerprint["plugin_version"]}
        if self.reference is not None:  # records computed against another reference are not reused
            identity["reference"] = identity_hash(self.reference.fingerprint)
        run_hash = identity_hash(identity, ignore=())
        return {
            **fingerprint,
            "settings": settings,
            "model_hash": model_hash,
            "settings_hash": settings_hash,
            "run_hash": run_hash,
        }

    def _load_reference(self, kwargs: dict[str, Any]) -> Reference | None:
        """The reference model of ``interp_reference`` (same device, dtype and tokenizer), or None."""
        settings = self.interp_settings
        if not settings.reference:
            return None
        return load_reference(
            settings.reference,
            self.model,
            self.tokenizer,
            gguf_file=settings.reference_gguf_file,
            trust_remote_code=bool(kwargs.get("trust_remote_code", False)),
        )

    def _request_resources(self, req: Instance, prepared: _Prepared) -> tuple[dict[str, Any], list[str]]:
        """What this request's signals read beyond it: the foil choice's token ids (the contrastive
        signal), with a note when there is none."""
        foil = self._foils.get(id(req))
        if foil is None or CONTRASTIVE not in self.interp_settings.signal_names:
            return {}, []
        if isinstance(foil, str):
            return {}, [f"contrastive: {foil}"]
        prompt_ids, foil_ids, _ = self._prompt_target_ids(req.args[0], foil.continuation)
        if prompt_ids[-len(prepared.prompt_ids) :] != prepared.prompt_ids:
            return {}, ["contrastive: the other choice tokenises the prompt differently; no contrast"]
        return {FOIL: foil_ids}, []

    def _selected(self, req: Instance) -> bool:
        tag = tag_of(req)
        if tag.skip:
            return False
        role = tag.role
        return self.interp_settings.choices == "all" or role in (None, "gold", "generated")

    def _interpret_all(
        self,
        requests: list[Instance],
        targets: list[str],
        disable_tqdm: bool,
        answers: dict[int, float] | None = None,
    ) -> None:
        """Interpret the selected requests, reusing stored records of the same computation; `answers` (the
        log-likelihood HFLM gave each loglikelihood request, by ``id``) must agree with a reused record's."""
        todo, seen = [], set()
        for req, target in zip(requests, targets):
            if id(req) in seen:  # repeats and data-parallel padding send the same Instance twice
                continue
            seen.add(id(req))
            if tag_of(req).skip:
                tag_of(req).output = {"skipped": tag_of(req).skip}
            elif self._selected(req):
                todo.append((req, target))
        if not todo:
            return
        events: dict[str, Counter] = {}  # per task: truncated prompts, empty targets (logged once below)
        reused, new, recomputed = 0, 0, Counter()
        for req, target in tqdm(todo, desc="Interpreting", disable=disable_tqdm or self.rank != 0):
            prepared = self._prepare(req, target)
            key = (req.task_name, prepared.doc_hash, int(req.idx))
            record, why = self.store.reuse(key, prepared.input_hash, self.fingerprint, HOW_NOT_WHAT)
            if record is not None and answers is not None and id(req) in answers:
                wrong = logprob_mismatch(record, answers[id(req)], self._half_precision)
                if wrong:
                    logger.warning(
                        "interp-hf: stored interpretation record of %s doc %d, request %d is not reused: %s",
                        req.task_name,
                        req.doc_id,
                        req.idx,
                        wrong,
                    )
                    record, why = None, "stored log-probabilities differ from this model's"
            if record is not None:
                reused += 1
            else:
                new += why == "new"
                if why != "new":
                    recomputed[why] += 1
                record = self._interpret_one(req, prepared)
                self.store.add(record)
            counts = events.setdefault(req.task_name, Counter())
            counts["truncated"] += any("left-truncated" in n for n in record.notes)
            counts["empty"] += not record.target_tokens
            counts["all"] += 1
            tag_of(req).output = {
                **record.metrics,
                names.INSTRUCTION_FOUND: float("instruction" in record.token_parts),
            }
        self.store.close()
        self._log_summary(reused, new, recomputed)
        for task, counts in events.items():
            if counts["truncated"]:
                logger.warning(
                    "interp-hf: task %s: %d of %d prompts were left-truncated to max_length %d; their part "
                    "labels are those of the kept tokens (see the records' notes)",
                    task,
                    counts["truncated"],
                    counts["all"],
                    self.max_length,
                )
            if counts["empty"]:
                logger.warning(
                    "interp-hf: task %s: %d of %d targets are empty (empty generations); their attribution "
                    "and instruction metrics are undefined and left out",
                    task,
                    counts["empty"],
                    counts["all"],
                )
        if self._fp32_errors:
            errors = sorted(self._fp32_errors)
            logger.info(
                "interp-hf: float32 check of %d half-precision attributions: median relative error "
                "%.2e, max %.2e",
                len(errors),
                errors[len(errors) // 2],
                errors[-1],
            )

    def _log_summary(self, reused: int, new: int, recomputed: Counter) -> None:
        """One line: how many records were reused, computed and recomputed, and why (a warning when stored
        records no longer matched, so that it shows at every verbosity)."""
        why = ", ".join(f"{n} {reason}" for reason, n in recomputed.most_common())
        text = (
            f"interp-hf: interpretation records in {self.records_dir}: {reused} reused, {new} computed, "
            f"{sum(recomputed.values())} recomputed" + (f" ({why})" if why else "")
        )
        if recomputed:
            logger.warning(text + "; the stale records stay in the file, superseded")
        else:
            logger.info(text)

    def _prompt_target_ids(self, context: str, continuation: str) -> tuple[list[int], list[int], str]:
        """Tokenise exactly as HFLM scores: trailing context spaces move to the continuation."""
        return encode_pair(
            lambda text, special: self.tok_encode(text, add_special_tokens=special),
            context,
            continuation,
            self.prefix_token_id,
        )

    def _prepare(self, req: Instance, target: str) -> _Prepared:
        """Everything the pass will interpret, before any model call: token ids, part labels, and the hash
        that identifies them (a changed prompt, few-shot set, system instruction or target changes it)."""
        prompt_ids, target_ids, context = self._prompt_target_ids(req.args[0], target)
        notes: list[str] = []
        add_special = (
            bool(prompt_ids[:1] == [self.tokenizer.bos_token_id])
            if self.tokenizer.bos_token_id is not None
            else False
        )
        if len(prompt_ids) + len(target_ids) > self.max_length:
            keep = self.max_length - len(target_ids)
            if keep < 1:
                raise ValueError(
                    f"{req.task_name} doc {req.doc_id}: the target alone ({len(target_ids)} tokens) is "
                    f"longer than the model's max_length {self.max_length}; raise max_length in --model_args"
                )
            notes.append(
                f"prompt left-truncated from {len(prompt_ids)} to {keep} tokens (max_length); part labels "
                "are those of the kept tokens"
            )
            offsets = truncated_offsets(self.tokenizer, context, prompt_ids, keep, add_special)
            prompt_ids = prompt_ids[-keep:]
        else:
            offsets = token_offsets(self.tokenizer, context, prompt_ids, add_special_tokens=add_special)
        spans = tag_of(req).spans or {}
        labels = label_tokens(offsets, context, spans)
        if tag_of(req).spans is None:
            notes.append("the task declared no prompt parts (not an interp_ task): no instruction metrics")
        role = tag_of(req).role or ("generated" if req.request_type == "generate_until" else "choice")
        identity = json.dumps([prompt_ids, target_ids, labels, role, req.request_type], separators=(",", ":"))
        return _Prepared(
            doc_hash=_doc_hash(req.doc),
            prompt_ids=prompt_ids,
            target_ids=target_ids,
            labels=labels,
            role=role,
            notes=notes,
            input_hash=_sha256(identity)[:16],
            context_sha256=_sha256(req.args[0]),
            continuation_sha256=_sha256(target),
        )

    def _interpret_one(self, req: Instance, prepared: _Prepared) -> InterpRecord:
        every = self.interp_settings.fp32_check
        check_fp32 = every > 0 and self._n_interpreted % every == 0
        self._n_interpreted += 1
        resources, notes = self._request_resources(req, prepared)
        result = self.interpreter.run(
            prepared.prompt_ids,
            prepared.target_ids,
            prepared.labels,
            check_fp32=check_fp32,
            resources=resources,
        )
        if "fp32_check" in result.extras:
            self._fp32_errors.append(result.extras["fp32_check"]["rel_error"])
        settings = self.interp_settings
        return InterpRecord.from_pass(
            result,
            request={
                "task": req.task_name,
                "doc_id": int(req.doc_id),
                "doc_hash": prepared.doc_hash,
                "request_index": int(req.idx),
                "request_type": req.request_type,
                "role": prepared.role,
                "input_hash": prepared.input_hash,
                "context_sha256": prepared.context_sha256,
                "continuation_sha256": prepared.continuation_sha256,
            },
            prompt_tokens=self.tokenizer.convert_ids_to_tokens(prepared.prompt_ids),
            target_tokens=self.tokenizer.convert_ids_to_tokens(prepared.target_ids),
            token_parts=prepared.labels,
            params={**settings.importance.__dict__, "objective": settings.objective},
            fingerprint=self.fingerprint,
            notes=list(prepared.notes) + notes,
            store_matrices=settings.store_matrices,
        )


@dataclass
class _Prepared:
    """One request, tokenised and labelled, before its interpretation pass."""

    doc_hash: str
    prompt_ids: list[int]
    target_ids: list[int]
    labels: list[str]
    role: str
    notes: list[str]
    input_hash: str
    context_sha256: str
    continuation_sha256: str


def _sha256(text: str) -> str:
    """lm-eval's `hash_string`: the samples' ``prompt_hash`` is this of the context."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _follow_lm_eval_logging() -> None:
    """Show the plugin's log lines wherever lm-eval's own show, at lm-eval's level.

    lm-eval's CLI gives only its ``lm_eval`` logger a handler (and stops it propagating), so the plugin's INFO
    lines (resume counts, where records go) would reach nobody. When lm-eval's CLI has configured logging and
    the plugin's logger has no handler of its own, use lm-eval's handler and level.
    """
    ours, theirs = logging.getLogger("lm_interp_plugin"), logging.getLogger("lm_eval")
    if ours.handlers or not theirs.handlers or logging.getLogger().handlers:
        return
    for handler in theirs.handlers:
        ours.addHandler(handler)
    ours.setLevel(theirs.level or logging.INFO)
    ours.propagate = False


def _doc_hash(doc: dict) -> str:
    """lm-eval's own doc_hash (evaluator.py), so records join samples and other runs on it."""
    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


__all__ = ["SPECIAL", "CacheNotSupportedError", "InterpHFLM"]
