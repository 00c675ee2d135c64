"""Joining a model shipped in registry packages: the parts in order, the size and sha256
checked, a missing part named with what to install. Small fake parts, no conversion."""

import hashlib
import sys

import pytest

from salesagent.platform.models import MODELS, QWEN_05B, ShippedModel, assemble_gguf


def fake_parts(tmp_path, monkeypatch, chunks: list[bytes]) -> tuple[str, ...]:
    names = []
    for n, chunk in enumerate(chunks, start=1):
        package = tmp_path / "site" / f"fake_model_part{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{n:02d}.bin").write_bytes(chunk)
        names.append(package.name)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return tuple(names)


def model(parts: tuple[str, ...], data: bytes) -> ShippedModel:
    return ShippedModel(
        parts=parts,
        requirement="the fake-model-part* packages",
        gguf_name="fake.gguf",
        gguf_bytes=len(data),
        gguf_sha256=hashlib.sha256(data).hexdigest(),
        folder_name="fake",
    )


def test_parts_join_in_order_and_are_checked(tmp_path, monkeypatch):
    chunks = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    parts = fake_parts(tmp_path, monkeypatch, chunks)
    joined = assemble_gguf(tmp_path / "cache", model(parts, b"".join(chunks)))
    assert joined.read_bytes() == b"".join(chunks)
    with pytest.raises(RuntimeError, match="checksum mismatch.*fake-model-part"):
        assemble_gguf(tmp_path / "other", model(parts, b"".join(reversed(chunks))))
    assert not list((tmp_path / "other").glob("*.partial"))  # a bad join is not kept


def test_a_missing_part_names_what_to_install(tmp_path):
    sys.modules.pop("fake_model_missing", None)
    with pytest.raises(RuntimeError, match="fake_model_missing is not installed; install"):
        assemble_gguf(tmp_path, model(("fake_model_missing",), b""))


def test_the_default_is_the_model_the_cpu_profile_serves():
    assert MODELS["qwen-0.5b"] is QWEN_05B and len(MODELS["qwen-1.5b"].parts) == 22
