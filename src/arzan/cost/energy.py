"""Energy of a session: measured where the machine has a counter, else estimated, else unknown.

Kept apart from the meter because each reader is machine-specific (NVML on a GPU, RAPL under Linux
powercap on a CPU) and must fail quietly to the next: a missing counter is never a failed run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from arzan.cost.ledger import Ledger
from arzan.cost.prices import canonical_gpu, load_catalog
from arzan.errors import ArzanError

Reader = tuple[str, str, Callable[[], float | None]]  # (basis, method, kWh since the reader was made)


def energy_reader(ledger: Ledger, billed_seconds: Callable[[], float]) -> Reader:
    """NVML's counter on the GPU trained on; else, on a GPU, the priced GPU's TDP × `billed_seconds()`
    (an upper bound); else the CPU packages' RAPL counters; else nothing. A CPU run priced as a GPU
    (`--gpu A100-40GB` to see a bill) drew a CPU's power, never an A100's."""
    try:
        import torch

        if torch.cuda.is_available():
            import pynvml

            pynvml.nvmlInit()
            handles = nvml_handles(pynvml, torch)

            def millijoules() -> float:
                return sum(pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles)

            start = millijoules()
            return "measured", "nvml", lambda: (millijoules() - start) / 3.6e9
    except Exception:  # no pynvml, no driver, or a GPU without an energy counter
        pass
    gpu = (ledger.price.gpu or ledger.hardware.gpu_name) if ledger.hardware.device == "cuda" else None
    try:
        tdp = load_catalog().gpus[canonical_gpu(gpu)]["tdp_watts"] if gpu else None
    except ArzanError:
        tdp = None
    if tdp:
        count = ledger.price.gpu_count
        return "estimated", "tdp", lambda: tdp * count * billed_seconds() / 3.6e6
    rapl = _rapl_reader()
    if rapl is not None:  # a CPU run: the package energy counters, where the kernel exposes them
        return "measured", "rapl", rapl
    return "unavailable", "none", lambda: None


def nvml_handles(pynvml: Any, torch: Any) -> list[Any]:
    """The NVML handle of the GPU arzan trains on (torch's cuda:0; train.sft_config keeps the Trainer
    on it): on a machine with more, the others' energy is not this run's. NVML numbers every GPU on
    the host, torch only the visible ones (CUDA_VISIBLE_DEVICES=3 is torch's 0 and NVML's 3), so
    match by UUID: by index, a shared host's measured energy would be another GPU's. One that cannot
    be matched (a MIG slice) raises, and the meter falls back to its TDP estimate."""
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    return [pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")]


RAPL_ROOT = Path("/sys/class/powercap")


def _rapl_reader() -> Callable[[], float | None] | None:
    """kWh since now from the CPU packages' RAPL counters (they wrap at max_energy_range_uj)."""
    zones = [z for z in sorted(RAPL_ROOT.glob("intel-rapl:*")) if z.name.count(":") == 1]
    try:
        counters = [(z / "energy_uj", int((z / "max_energy_range_uj").read_text())) for z in zones]
        last = [int(f.read_text()) for f, _ in counters]
    except (OSError, ValueError):  # absent, or readable by root only
        return None
    if not counters:
        return None
    total = [0]

    def kwh() -> float:
        for i, (f, wrap) in enumerate(counters):
            now = int(f.read_text())
            total[0] += now - last[i] if now >= last[i] else now + wrap - last[i]
            last[i] = now
        return total[0] / 3.6e12

    return kwh
