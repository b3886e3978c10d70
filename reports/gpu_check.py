"""The report's "Measured on this GPU" section: the CUDA ports timed against the predictions."""
from __future__ import annotations

from attnsim import gpu as backend
from attnsim import gpu_check
from reports.document import Section, Table


def gpu_check_section(gpu):
    """(Section, data) for ``attnsim report`` when a device is present, else None."""
    ok, device = backend.gpu_available()
    if not ok:
        return None
    rows = gpu_check.check_rows(gpu, gpu_check.DEFAULT_WORKLOAD, gpu_check.DEFAULT_SEQS,
                                gpu_check.checkable_algorithms(),
                                sdpa=backend.sdpa_available()[0])
    headers, body = gpu_check.table_rows(rows)
    table = Table(key="gpu_check", title="", headers=headers, rows=body, records=rows)
    text = (f"Measured on {device} with the CUDA ports (algorithms/cuda), against this report's "
            f"predictions for {gpu.full_name}; workload "
            f"{gpu_check.DEFAULT_WORKLOAD.describe()}, N swept.")
    return Section("Measured on this GPU", paragraphs=[text], tables=[table]), {
        "device": device, "model": gpu.name, "rows": rows}
