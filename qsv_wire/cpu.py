"""The CPU this process runs on: model name and the SIMD flags that decide which kernels are fastest.

Recorded with every benchmark figure and in the verifier's calibration key (cloud_verifier.calibration): these
machines come as AVX2-only, AVX-512 with bf16 + VNNI, or AVX-512 VNNI without bf16, and boards as ARM.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import lru_cache

KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
             "asimddp", "bf16", "i8mm", "sve")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix units (x86 avx512_bf16 / AMX, ARM bf16); elsewhere bf16 GEMMs are emulated."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags) or self.arm_bf16

    @property
    def arm_bf16(self) -> bool:
        return "bf16" in self.flags and platform.machine() in ("aarch64", "arm64")

    def key_flags(self) -> list[str]:
        """The flags that decide which kernels are fastest, in a fixed order."""
        return [f for f in KEY_FLAGS if f in self.flags]

    def label(self) -> str:
        return f"{self.model} [{' '.join(self.key_flags()) or 'no SIMD flags read'}]"


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """CPU model name and feature flags from /proc/cpuinfo (empty flags where it cannot be read)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return CpuInfo(model or "unknown", frozenset(flags))
