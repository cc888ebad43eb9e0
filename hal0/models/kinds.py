"""What a model path holds, from its bytes and layout: a path that is no model is refused.

A file is a GGUF (magic ``GGUF``), a safetensors file (an 8-byte header length, then JSON), a
PyTorch checkpoint (a zip or a pickle) or an ONNX file; a folder is a CTranslate2 Whisper model,
a folder of ONNX files (Moonshine) or a folder of checkpoints (Flux's parts). Nothing else:
``/etc/shadow`` or ``/etc`` is not a model.
"""

from __future__ import annotations

import os
from pathlib import Path

from hal0.errors import ModelFilesMissing, ModelInvalid

__all__ = ["KINDS", "model_kind"]

KINDS = ("gguf", "safetensors", "checkpoint", "onnx", "whisper-ct2", "onnx-folder", "checkpoint-folder")
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
_SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def _file_kind(path: Path) -> str | None:
    with path.open("rb") as f:
        head = f.read(9)
    suffix = path.suffix.lower()
    if head[:4] == b"GGUF":
        return "gguf"
    if suffix in _SAFETENSORS_SUFFIXES and len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    if suffix in _CHECKPOINT_SUFFIXES and (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):
        return "checkpoint"
    if suffix == ".onnx" and head[:1] == b"\x08":  # a ModelProto starts with its ir_version field
        return "onnx"
    return None


def _folder_kind(path: Path) -> str | None:
    names = {p.name for p in path.iterdir() if p.is_file()}
    if {"model.bin", "config.json"} <= names:
        return "whisper-ct2"
    if any(n.endswith(".onnx") for n in names):
        return "onnx-folder"
    if any(n.lower().endswith(_SAFETENSORS_SUFFIXES + _CHECKPOINT_SUFFIXES) for n in names):
        return "checkpoint-folder"
    return None


def model_kind(path: Path) -> str:
    """The kind of model at ``path`` (one of ``KINDS``). Raises ModelFilesMissing (nothing there)
    or ModelInvalid (unreadable, or not a model hal0 knows)."""
    if not path.exists():
        raise ModelFilesMissing(f"{path} does not exist", path=str(path))
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise ModelInvalid(f"{path} is not readable by hal0", path=str(path))
    try:
        kind = _folder_kind(path) if path.is_dir() else _file_kind(path) if path.is_file() else None
    except OSError as e:
        raise ModelInvalid(f"{path} cannot be read: {e.strerror or e}", path=str(path)) from None
    if kind is None:
        raise ModelInvalid(f"{path} is not a model hal0 knows: expected a GGUF, safetensors, checkpoint or ONNX "
                           "file, or a Whisper (CTranslate2), ONNX or checkpoint folder", path=str(path))
    return kind
