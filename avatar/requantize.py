"""Re-quantising a GGUF chat model to Q4_0 with gguf-py (llama.cpp's own Python package), no compiler.

Why not llama.cpp's C quantiser: it ships only with llama-cpp-python, which is source-only on PyPI,
and the prebuilt runtime (xllamacpp) does not export it. gguf-py implements the same reference
quantisation in numpy: on the embedded Qwen2.5-Coder-0.5B every one of the 291 tensors comes out
byte-for-byte as llama.cpp's quantiser writes it (checked 2026-12-04); only the header's layout
differs, so the file has its own SHA-256.

The rule is llama.cpp's for ``Q4_0`` on this model: every quantised weight becomes Q4_0 except the
output layer, which stays Q8_0 (Qwen's 896-wide rows do not fit the K-quants llama.cpp would pick);
float tensors (norms, biases) are kept as they are.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from avatar.errors import ModelError

OUTPUT_LAYER = "output.weight"


def requantize_q4_0(source: Path, dest: Path, *, workers: int = 2) -> None:
    """Write ``source`` (a GGUF file) to ``dest`` with its weights re-quantised to Q4_0 (see above)."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dest, arch, use_temp_file=False)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the writer writes these itself
        if name == "general.file_type":
            writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_0))
            continue
        kind = field.types[0]
        writer.add_key_value(name, field.contents(), kind, sub_type=field.types[-1] if len(field.types) > 1 else None)
    # numpy releases the GIL in the heavy parts: two tensors at a time on two cores.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        converted = list(pool.map(lambda t: _convert(gguf, t), reader.tensors))
    for tensor, (data, qtype) in zip(reader.tensors, converted, strict=True):
        raw_shape = data.shape if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else None
        writer.add_tensor(tensor.name, data, raw_shape=raw_shape, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _convert(gguf: Any, tensor: Any) -> tuple[np.ndarray, Any]:
    types = gguf.GGMLQuantizationType
    data = np.asarray(tensor.data)
    if tensor.tensor_type in (types.F32, types.F16):
        return data, tensor.tensor_type
    target = types.Q8_0 if tensor.name == OUTPUT_LAYER else types.Q4_0
    if tensor.tensor_type == target:
        return data, target
    try:
        return gguf.quants.quantize(gguf.quants.dequantize(data, tensor.tensor_type), target), target
    except NotImplementedError as exc:
        raise ModelError(f"{tensor.name} is {tensor.tensor_type.name}, which gguf-py cannot read: {exc}") from exc
