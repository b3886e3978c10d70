"""Nsight Compute DRAM bytes against the simulator's counted HBM bytes, kernel by kernel.

The check: for one large case per CUDA port, the DRAM traffic a real GPU moves
(``ncu --metrics dram__bytes_read.sum,dram__bytes_write.sum``) next to what the simulator
counts. ``benchmarks/ncu_dram.py`` runs the port once under ``ncu`` and calls this module;
everything here is plain parsing and arithmetic, so it is tested without a GPU.

Three numbers per kernel and direction, because they answer different questions:

* ``counted``: the simulator's HBM bytes (``KernelRecord.counters``), what the algorithm
  requests from memory — the quantity the IO-complexity theorems bound;
* ``modelled``: the timing model's DRAM estimate after its L2 filter
  (``hwmodels.timing.dram_bytes``, reads and writes together), what the runtime prediction
  charges to HBM bandwidth;
* ``measured``: the device's DRAM bytes. At large N, where inputs overflow L2, measured
  reads should approach ``counted`` for the FlashAttention kernels; where L2 serves re-reads
  (K/V of concurrently resident CTAs), measured sits between the compulsory bytes and
  ``counted``, and ``modelled`` should track it.

With ``pipes``, the same launches are checked per SM pipe: the warp-instructions ncu counts
on the FMA, ALU and XU pipes (``smsp__inst_executed_pipe_{fma,alu,xu}.sum``; Nsight Compute's
pipe definitions: FP32 add/multiply/FMA on the FMA pipe; compare, min/max, select, logic,
integer and FP32-to-FP16 conversion on the ALU; exp2 and other special functions on the XU)
next to the instructions the timing model prices there: (other_flops - alu_ops) / 32,
(alu_ops + convert_ops / 2) / 32 and exp_ops / 32. A port also issues address and loop
arithmetic the counts leave out, so measured above counted is expected; what the check shows
is whether the counted instructions are the bulk, and the split between the pipes.

ncu's CSV (``--csv --print-units base``) has one row per (kernel launch, metric), with the
launch ``ID``, ``Kernel Name``, ``Metric Name``, ``Metric Unit`` and ``Metric Value``;
values may carry thousands separators. CuPy launches kernels of its own (``fill``); only the
launches whose names are the port's kernels are kept, in launch order, and they must line up
one to one with the port's declared launches.
"""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field

from hwmodels.counters import HBM_READ_BYTES, HBM_WRITE_BYTES
from hwmodels.timing import WARP, kernel_lane_ops

READ_METRIC = "dram__bytes_read.sum"
WRITE_METRIC = "dram__bytes_write.sum"
NCU_METRICS = f"{READ_METRIC},{WRITE_METRIC}"
PIPE_METRICS = {"fma": "smsp__inst_executed_pipe_fma.sum",
                "alu": "smsp__inst_executed_pipe_alu.sum",
                "xu": "smsp__inst_executed_pipe_xu.sum"}
PIPE_NCU_METRICS = ",".join(PIPE_METRICS.values())
_UNIT_BYTES = {"byte": 1, "kbyte": 10**3, "mbyte": 10**6, "gbyte": 10**9, "tbyte": 10**12,
               "kibyte": 2**10, "mibyte": 2**20, "gibyte": 2**30}


class NcuParseError(ValueError):
    """The ncu output is not what was expected (the message says what and how to fix it)."""


@dataclass(frozen=True)
class NcuLaunch:
    """DRAM bytes of one profiled kernel launch."""
    launch_id: int
    kernel: str
    read_bytes: float
    write_bytes: float
    pipe_instructions: dict = field(default_factory=dict)   # pipe -> warp-instructions


def _bytes(value: str, unit: str) -> float:
    factor = _UNIT_BYTES.get(unit.strip().lower())
    if factor is None:
        raise NcuParseError(f"unknown unit {unit!r} for a DRAM byte metric; run ncu with "
                            f"--print-units base")
    return float(value.replace(",", "")) * factor


def _count(value: str) -> float:
    try:
        return float(value.replace(",", ""))
    except ValueError:
        raise NcuParseError(f"pipe metric value {value!r} is not a number; this GPU or ncu "
                            f"may not have the metric (run without --pipes)") from None


def parse_ncu_csv(text: str, pipes: bool = False) -> list[NcuLaunch]:
    """Launches with both DRAM metrics (and, with ``pipes``, the three pipe instruction
    counts) from ``ncu --csv`` output, in launch order.

    Lines that are not CSV rows (``==PROF==`` messages, the program's own output) are skipped.
    The kernel name is cut at its first ``(`` (ncu may print a signature)."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]
    if not lines:
        raise NcuParseError("no CSV rows in the ncu output (was ncu run with --csv, and did "
                            "the program launch any kernel?)")
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    missing = {"ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"} - set(rows[0])
    if missing:
        raise NcuParseError(f"ncu CSV lacks columns {sorted(missing)}; use the default "
                            f"(details) page with --csv")
    pipe_of = {metric: pipe for pipe, metric in PIPE_METRICS.items()} if pipes else {}
    found: dict[int, dict] = {}
    for r in rows:
        name = r["Metric Name"]
        if name not in (READ_METRIC, WRITE_METRIC) and name not in pipe_of:
            continue
        launch = found.setdefault(int(r["ID"]), {"kernel": r["Kernel Name"].split("(")[0].strip(),
                                                 "pipes": {}})
        if name in pipe_of:
            launch["pipes"][pipe_of[name]] = _count(r["Metric Value"])
        else:
            launch[name] = _bytes(r["Metric Value"], r["Metric Unit"])
    wanted = NCU_METRICS + ("," + PIPE_NCU_METRICS if pipes else "")
    launches = []
    for launch_id in sorted(found):
        f = found[launch_id]
        if READ_METRIC not in f or WRITE_METRIC not in f or len(f["pipes"]) < len(pipe_of):
            raise NcuParseError(f"launch {launch_id} ({f['kernel']}) lacks one of "
                                f"{wanted}; pass --metrics {wanted}")
        launches.append(NcuLaunch(launch_id, f["kernel"], f[READ_METRIC], f[WRITE_METRIC],
                                  f["pipes"]))
    return launches


def port_launches_only(launches: list[NcuLaunch], port_kernels: list[str],
                       setup_kernels: list[str] = ()) -> list[NcuLaunch]:
    """The profiled launches of the port (its kernels, in order), without CuPy's own and
    without the port's untimed setup.

    ``port_kernels``: the kernel names of the port's declared launches, in launch order;
    ``setup_kernels``: those of its setup launches, which run first (a backward-only port's
    forward; the ring's other devices, which launch the same kernel as the timed steps). The
    profile must hold exactly one run of the setup, then of the launches."""
    names = set(port_kernels) | set(setup_kernels)
    mine = [l for l in launches if l.kernel in names]
    expected = [*setup_kernels, *port_kernels]
    if [l.kernel for l in mine] != expected:
        raise NcuParseError(f"the profiled port launches {[l.kernel for l in mine]} do not "
                            f"match the declared {expected}: profile exactly one "
                            f"run of the port (benchmarks/ncu_dram.py --run-once)")
    return mine[len(setup_kernels):]


@dataclass(frozen=True)
class DramRow:
    """One kernel: counted, modelled and measured DRAM bytes, and their ratios."""
    kernel: str
    sim_kernel: str
    counted_read: int
    counted_write: int
    modelled_total: int
    measured_read: float
    measured_write: float

    @property
    def read_ratio(self) -> float | None:
        return self.measured_read / self.counted_read if self.counted_read else None

    @property
    def write_ratio(self) -> float | None:
        return self.measured_write / self.counted_write if self.counted_write else None

    @property
    def modelled_ratio(self) -> float | None:
        measured = self.measured_read + self.measured_write
        return measured / self.modelled_total if self.modelled_total else None

    def as_dict(self) -> dict:
        return {**asdict(self), "read_ratio": self.read_ratio, "write_ratio": self.write_ratio,
                "measured_over_modelled": self.modelled_ratio}


def compare(declared, sim_kernels, kernel_times, measured: list[NcuLaunch]) -> list[DramRow]:
    """Rows pairing each declared launch (``ports.Launch``) with its simulated kernel
    (``KernelRecord`` and the timing model's ``KernelTime``, matched by name) and its
    profiled launch (same position)."""
    records = {k.name: k for k in sim_kernels}
    times = {t.name: t for t in kernel_times}
    if len(declared) != len(measured):
        raise NcuParseError(f"{len(declared)} declared launches but {len(measured)} profiled")
    rows = []
    for launch, got in zip(declared, measured):
        rec = records[launch.sim_kernel]
        rows.append(DramRow(kernel=launch.kernel, sim_kernel=launch.sim_kernel,
                            counted_read=int(rec.counters[HBM_READ_BYTES]),
                            counted_write=int(rec.counters[HBM_WRITE_BYTES]),
                            modelled_total=int(times[launch.sim_kernel].dram_bytes),
                            measured_read=got.read_bytes, measured_write=got.write_bytes))
    return rows


def counted_pipe_instructions(kernel) -> dict[str, float]:
    """The warp-instructions the timing model prices on each pipe: a kernel's counted ops and
    its math-library routines' instructions (``KernelRecord.library_lane_ops``)."""
    return {pipe: ops / WARP for pipe, ops in kernel_lane_ops(kernel).items()}


@dataclass(frozen=True)
class PipeRow:
    """One kernel: the warp-instructions counted and measured on each pipe."""
    kernel: str
    counted: dict
    measured: dict

    def ratio(self, pipe: str) -> float | None:
        return self.measured[pipe] / self.counted[pipe] if self.counted[pipe] else None

    def as_dict(self) -> dict:
        return {**asdict(self), "measured_over_counted": {p: self.ratio(p) for p in self.counted}}


def compare_pipes(declared, sim_kernels, measured: list[NcuLaunch]) -> list[PipeRow]:
    """Each declared launch's counted pipe instructions beside its profiled launch's."""
    records = {k.name: k for k in sim_kernels}
    if len(declared) != len(measured):
        raise NcuParseError(f"{len(declared)} declared launches but {len(measured)} profiled")
    return [PipeRow(launch.kernel, counted_pipe_instructions(records[launch.sim_kernel]),
                    dict(got.pipe_instructions)) for launch, got in zip(declared, measured)]


def render_pipe_rows(rows: list[PipeRow], fmt: str = "text") -> str:
    """Counted and measured warp-instructions (millions) per pipe, and their ratio."""
    from tabulate import tabulate
    body, headers = [], ["kernel"]
    for pipe in PIPE_METRICS:
        headers += [f"{pipe} counted M", f"{pipe} ncu M", "ncu/counted"]
    for r in rows:
        line = [r.kernel]
        for pipe in PIPE_METRICS:
            ratio = r.ratio(pipe)
            line += [f"{r.counted[pipe] / 1e6:,.2f}", f"{r.measured[pipe] / 1e6:,.2f}",
                     "—" if ratio is None else f"{ratio:.2f}"]
        body.append(line)
    return tabulate(body, headers=headers, tablefmt="github" if fmt == "markdown" else "simple",
                    disable_numparse=True)


def render_rows(rows: list[DramRow], fmt: str = "text") -> str:
    """A table (tabulate; ``markdown`` for a GitHub table)."""
    from tabulate import tabulate

    def mb(x):
        return f"{x / 1e6:,.1f}"

    def ratio(x):
        return "—" if x is None else f"{x:.2f}"

    body = [[r.kernel, mb(r.counted_read), mb(r.measured_read), ratio(r.read_ratio),
             mb(r.counted_write), mb(r.measured_write), ratio(r.write_ratio),
             mb(r.modelled_total), ratio(r.modelled_ratio)] for r in rows]
    headers = ["kernel", "counted read MB", "ncu read MB", "ncu/counted",
               "counted write MB", "ncu write MB", "ncu/counted",
               "modelled DRAM MB", "ncu/modelled"]
    return tabulate(body, headers=headers, tablefmt="github" if fmt == "markdown" else "simple",
                    disable_numparse=True)
