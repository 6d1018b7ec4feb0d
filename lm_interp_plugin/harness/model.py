"""`interp-hf`: lm-eval's HF model, answering exactly as `hf` does, plus one interpretation pass per request.

The stock answers come from `HFLM` unchanged (same batching, same SDPA path), so accuracy is identical to
`--model hf`. Afterwards every selected request gets one interpretation pass (`interpret.run_pass`) on its
(context, continuation) or (context, generation), tokenised exactly as HFLM scored it. The pass's scalars are
attached to the request (`Instance.interp_output`), where `InterpTask` picks them up for the samples; the full
record is appended to ``<records_dir>/interp_records_<task>.jsonl`` as soon as it exists, and a rerun with the
same records_dir reuses finished records instead of recomputing them (resume).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.utils import sanitize_model_name
from tqdm import tqdm

from .. import __version__
from ..interpret.passes import run_pass
from ..interpret.settings import InterpSettings
from ..records import RECORDS_DIR_KEY, InterpRecord, RecordWriter, load_records, record_files
from ..spans import SPECIAL, label_tokens, token_offsets

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
        self.interp_settings = InterpSettings.from_kwargs(interp_kwargs)
        super().__init__(pretrained=pretrained, **kwargs)
        self._shard_across_cpu_processes()
        self.pretrained_name = pretrained if isinstance(pretrained, str) else type(pretrained).__name__
        self.records_dir = Path(
            records_dir
            or os.environ.get(RECORDS_DIR_ENV)
            or Path("lm_interp_records") / sanitize_model_name(self.pretrained_name)
        )
        self.fingerprint = self._fingerprint(kwargs)
        self._writer: RecordWriter | None = None
        self._done: dict[tuple[str, str, int], InterpRecord] | None = None
        self._ffn_probe = None
        self._ffn_error: str | None = None
        self._n_interpreted = 0  # requests interpreted by this process (picks the float32-checked ones)
        self._fp32_errors: list[float] = []
        logger.info("interp-hf: interpretation records go to %s", self.records_dir)

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
    def set_cache_hook(self, cache_hook) -> None:
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

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        results = super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        self._interpret_all(requests, [req.args[1] for req in requests], disable_tqdm)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False):
        results = super().generate_until(requests, disable_tqdm=disable_tqdm)
        self._interpret_all(requests, list(results), disable_tqdm)
        return results

    # ------------------------------------------------------------------ the interpretation side
    def _fingerprint(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        model = self.model
        n_params = sum(p.numel() for p in model.parameters())
        return {
            "model": self.pretrained_name,
            "revision": kwargs.get("revision", "main"),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "n_parameters": int(n_params),
            "model_type": getattr(model.config, "model_type", None),
            "tokenizer_name": getattr(self.tokenizer, "name_or_path", None),
            "plugin_version": __version__,
            "settings": self.interp_settings.to_dict(),
        }

    def _settings_key(self) -> str:
        """Hash of what determines the results; how they are computed (chunking, memory) is left out, so a
        rerun
        with a smaller memory budget after running out of memory still resumes."""
        how = {"chunk_size", "memory_budget", "checkpoint", "fp32_check"}
        settings = {k: v for k, v in self.fingerprint["settings"].items() if k not in how}
        blob = repr(sorted({**self.fingerprint, "settings": sorted(settings.items())}.items()))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _finished_records(self) -> dict[tuple[str, str, int], InterpRecord]:
        if self._done is None:
            self._done = {}
            for path in record_files(self.records_dir, rank=self.rank, world_size=self.world_size):
                for record in load_records(path):
                    if record.fingerprint.get("run_hash") == self._settings_key():
                        self._done[record.key] = record
            if self._done:
                logger.info(
                    "interp-hf: resuming, %d finished interpretation records found in %s",
                    len(self._done),
                    self.records_dir,
                )
        return self._done

    def _writer_handle(self) -> RecordWriter:
        if self._writer is None:
            self._writer = RecordWriter(self.records_dir, rank=self.rank, world_size=self.world_size)
        return self._writer

    def _selected(self, req) -> bool:
        if getattr(req, "interp_skip", None):
            return False
        role = getattr(req, "interp_role", None)
        return self.interp_settings.choices == "all" or role in (None, "gold", "generated")

    def _interpret_all(self, requests, targets, disable_tqdm: bool) -> None:
        todo, seen = [], set()
        for req, target in zip(requests, targets):
            if id(req) in seen:  # repeats and data-parallel padding send the same Instance twice
                continue
            seen.add(id(req))
            if getattr(req, "interp_skip", None):
                req.interp_output = {"skipped": req.interp_skip}
            elif self._selected(req):
                todo.append((req, target))
        if not todo:
            return
        finished = self._finished_records()
        for req, target in tqdm(todo, desc="Interpreting", disable=disable_tqdm or self.rank != 0):
            key = (req.task_name, _doc_hash(req.doc), int(req.idx))
            record = finished.get(key)
            if record is None:
                record = self._interpret_one(req, target, key)
                self._writer_handle().write(record)
                finished[key] = record
            req.interp_output = dict(record.metrics)
        if self._writer is not None:
            self._writer.flush()
        if self._fp32_errors:
            errors = sorted(self._fp32_errors)
            logger.info(
                "interp-hf: float32 check of %d half-precision attributions: median relative error "
                "%.2e, max %.2e",
                len(errors),
                errors[len(errors) // 2],
                errors[-1],
            )

    def _probe(self):
        """The FFN concept probe, built on first use; None (with a warning once) if the model has no
        adapter."""
        if not self.interp_settings.ffn or self._ffn_error:
            return None
        if self._ffn_probe is None:
            from ..arch import UnsupportedArchitectureError
            from ..interpret.ffn_probe import FFNProbe

            try:
                self._ffn_probe = FFNProbe(
                    self.model,
                    self.tokenizer,
                    k=self.interp_settings.ffn_k,
                    cache_dir=self.records_dir / "ffn_components",
                    model_identity=f"{self.pretrained_name}@{self.fingerprint['revision']}",
                )
            except UnsupportedArchitectureError as err:
                self._ffn_error = str(err)
                logger.warning(
                    "interp-hf: FFN concepts disabled for this model (%s); pass interp_ffn=false "
                    "to silence this",
                    err,
                )
                return None
        return self._ffn_probe

    def _prompt_target_ids(self, context: str, continuation: str) -> tuple[list[int], list[int], str]:
        """Tokenise exactly as HFLM scores: trailing context spaces move to the continuation."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if not context:
            return [self.prefix_token_id], self.tok_encode(continuation, add_special_tokens=False), context
        prompt_ids, target_ids = self._encode_pair(context, continuation)
        return list(prompt_ids), list(target_ids), context

    def _interpret_one(self, req, target: str, key) -> InterpRecord:
        context = req.args[0]
        prompt_ids, target_ids, context = self._prompt_target_ids(context, target)
        total = len(prompt_ids) + len(target_ids)
        notes: list[str] = []
        if total > self.max_length:
            keep = self.max_length - len(target_ids)
            if keep < 1:
                raise ValueError(
                    f"{req.task_name} doc {req.doc_id}: the target alone ({len(target_ids)} tokens) is "
                    "longer "
                    f"than the model's max_length {self.max_length}; raise max_length in --model_args"
                )
            notes.append(f"prompt left-truncated from {len(prompt_ids)} to {keep} tokens (max_length)")
            prompt_ids = prompt_ids[-keep:]
        add_special = (
            bool(prompt_ids[:1] == [self.tokenizer.bos_token_id])
            if self.tokenizer.bos_token_id is not None
            else False
        )
        offsets = (
            token_offsets(self.tokenizer, context, prompt_ids, add_special_tokens=add_special)
            if not notes
            else [(0, 0)] * len(prompt_ids)
        )
        spans = getattr(req, "interp_spans", None) or {}
        labels = label_tokens(offsets, context, spans)
        if getattr(req, "interp_spans", None) is None:
            notes.append("the task declared no prompt parts (not an interp_ task): no instruction metrics")
        probe = self._probe()
        if probe is None and self.interp_settings.ffn:
            notes.append(f"no FFN concepts: {self._ffn_error}")
        neutral = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        every = self.interp_settings.fp32_check
        check_fp32 = every > 0 and self._n_interpreted % every == 0
        self._n_interpreted += 1
        result = run_pass(
            self.model,
            prompt_ids,
            target_ids,
            labels,
            self.interp_settings,
            probe,
            neutral_token_id=neutral,
            check_fp32=check_fp32,
        )
        if "fp32_check" in result.extras:
            self._fp32_errors.append(result.extras["fp32_check"]["rel_error"])
        settings = self.interp_settings
        return InterpRecord(
            task=req.task_name,
            doc_id=int(req.doc_id),
            doc_hash=key[1],
            request_index=int(req.idx),
            request_type=req.request_type,
            role=getattr(req, "interp_role", None)
            or ("generated" if req.request_type == "generate_until" else "choice"),
            prompt_tokens=self.tokenizer.convert_ids_to_tokens(prompt_ids),
            target_tokens=self.tokenizer.convert_ids_to_tokens(target_ids),
            token_parts=labels,
            raw=result.raw.tolist() if settings.store_matrices else [],
            quantised=result.quantised.tolist() if settings.store_matrices else [],
            params={
                **settings.importance.__dict__,
                "objective": settings.objective,
                "mode": result.mode,
                "method": "gradient_x_input",
            },
            metrics=result.metrics,
            attention=result.attention,
            ffn=result.ffn,
            extras={"target_logprobs": result.target_logprobs.tolist(), **result.extras},
            fingerprint={**self.fingerprint, "run_hash": self._settings_key()},
            notes=notes + result.notes,
        )


def _doc_hash(doc: dict) -> str:
    """lm-eval's own doc_hash (evaluator.py), so records join samples and other runs on it."""
    import json

    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


__all__ = ["SPECIAL", "CacheNotSupportedError", "InterpHFLM"]
