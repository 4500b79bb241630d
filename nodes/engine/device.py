"""Device choice and numeric settings shared by the nodes that run networks."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Device:
    """Where a network runs and how: channels_last and autocast only pay off on CUDA."""

    torch: torch.device
    autocast_dtype: torch.dtype | None

    @property
    def is_cuda(self) -> bool:
        return self.torch.type == "cuda"

    @property
    def needs_scaler(self) -> bool:
        """fp16 autocast needs loss scaling; bf16 does not."""
        return self.autocast_dtype == torch.float16

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch.type, dtype=self.autocast_dtype)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        module = module.to(self.torch)
        return module.to(memory_format=torch.channels_last) if self.is_cuda else module

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.torch, non_blocking=self.is_cuda)
        if self.is_cuda and images.dim() == 4:  # cached features may be flat vectors
            return images.contiguous(memory_format=torch.channels_last)
        return images


def resolve_device(name: str = "auto", mixed_precision: bool = True) -> Device:
    """``auto`` picks CUDA, then Apple MPS, then CPU. On CUDA, mixed precision uses bf16 where the
    GPU supports it and fp16 (with a GradScaler) otherwise."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    device = torch.device(name)
    dtype = None
    if device.type == "cuda":  # fixed input shapes: let cuDNN pick the fastest kernels once
        torch.backends.cudnn.benchmark = True
    if device.type == "cuda" and mixed_precision:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Device(device, dtype)


def seed_everything(seed: int) -> torch.Generator:
    """Seed the global generators (model init, dropout) and return a generator for data order."""
    seed = int(seed) % (2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure, which torch raises as RuntimeError."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "DefaultCPUAllocator" in text)


def free_memory() -> None:
    """Give back what a failed step held, so the next run (and the editor) has room again."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
