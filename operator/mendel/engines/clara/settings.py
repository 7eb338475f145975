"""The few numbers the CLaRa model core needs, lifted out of the custom resource.

The model core takes this small frozen value instead of the whole `CompressorTrainingSpec`
so that it can be built from a saved checkpoint (where there is no spec) and from tests;
`ClaraSettings.from_spec` is the one place that reads the API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mendel.api.compressor import CompressorTrainingSpec

__all__ = ["ADAPTERS", "COMPRESSOR", "GENERATOR", "QUERY_REASONER", "ClaraSettings"]

COMPRESSOR = "compressor"
GENERATOR = "generator"
QUERY_REASONER = "query_reasoner"
ADAPTERS = (COMPRESSOR, GENERATOR, QUERY_REASONER)
"""The three LoRA roles on the one backbone, in the order they are created and saved."""


@dataclass(frozen=True)
class ClaraSettings:
    """Compression shape and adapter shape.

    Attributes:
        compression_rate: Tokens of document per memory token.
        chunk_size: Document tokens per chunk; longer documents are split, never truncated.
        lora_r: Adapter rank.
        lora_alpha: Adapter scaling numerator (alpha / r).
        lora_dropout: Dropout on the adapter input.
        target_modules: Module names to adapt, or ["all-linear"].
    """

    compression_rate: int = 32
    chunk_size: int = 256
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = field(default=("all-linear",))

    def __post_init__(self) -> None:
        if self.compression_rate < 1 or self.chunk_size < 1:
            raise ValueError("compression_rate and chunk_size must be positive")
        if self.chunk_size // self.compression_rate < 1:
            raise ValueError(
                f"chunk_size {self.chunk_size} is smaller than compression_rate "
                f"{self.compression_rate}: a chunk would get no memory token"
            )

    @property
    def memory_tokens(self) -> int:
        """Memory tokens per chunk: chunk_size // compression_rate (the API's definition)."""
        return self.chunk_size // self.compression_rate

    @classmethod
    def from_spec(cls, spec: CompressorTrainingSpec) -> ClaraSettings:
        """The settings a CompressorTraining resource asks for."""
        return cls(
            compression_rate=spec.compression.rate,
            chunk_size=spec.compression.doc_max_tokens,
            lora_r=spec.lora.r,
            lora_alpha=spec.lora.alpha,
            lora_dropout=spec.lora.dropout,
            target_modules=tuple(spec.lora.target_modules),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_json` reads it back."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClaraSettings:
        """Settings from `to_json` output.

        Raises:
            ValueError: a field is missing or invalid.
        """
        try:
            return cls(
                compression_rate=int(data["compression_rate"]),
                chunk_size=int(data["chunk_size"]),
                lora_r=int(data["lora_r"]),
                lora_alpha=int(data["lora_alpha"]),
                lora_dropout=float(data["lora_dropout"]),
                target_modules=tuple(str(m) for m in data["target_modules"]),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"invalid CLaRa settings {data!r}: {error}") from error
