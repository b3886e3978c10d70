"""attnsim.ncu: Nsight Compute DRAM bytes against counted bytes (parsing and pairing; the
profiling itself needs a GPU: benchmarks/ncu_dram.py)."""
import pytest

from algorithms import ports
from algorithms.registry import get_algorithm
from attnsim import ncu
from attnsim.simulate import simulate
from attnsim.workload import Workload
from hwmodels import get_gpu
from _benchmarks import load_benchmark

# what `ncu --csv --print-units base` writes, with a CuPy fill launch before the port's
# kernels, program output and ==PROF== lines around the CSV, a kernel signature, thousands
# separators and one row in Kbyte (as ncu prints without --print-units base)
HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
          '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
          '"Metric Value"')


def row(launch_id, kernel, metric, unit, value):
    return (f'"{launch_id}","123","python","host","{kernel}","1","7","(128, 1, 1)",'
            f'"(64, 64, 1)","0","9.0","Command line profiler metrics","{metric}","{unit}",'
            f'"{value}"')


SAMPLE = "\n".join([
    "==PROF== Connected to process 123 (python)",
    "some program output",
    HEADER,
    row(0, "cupy_fill", "dram__bytes_read.sum", "byte", "0"),
    row(0, "cupy_fill", "dram__bytes_write.sum", "byte", "4,096"),
    row(1, "flash2_fwd(const attn_t *, ...)", "dram__bytes_read.sum", "byte", "12,582,912"),
    row(1, "flash2_fwd(const attn_t *, ...)", "dram__bytes_write.sum", "Kbyte", "4,224"),
    "==PROF== Disconnected from process 123",
])


def test_parse_keeps_launch_order_units_and_kernel_names():
    launches = ncu.parse_ncu_csv(SAMPLE)
    assert [(l.launch_id, l.kernel) for l in launches] == [(0, "cupy_fill"), (1, "flash2_fwd")]
    assert launches[1].read_bytes == 12_582_912
    assert launches[1].write_bytes == 4_224_000
    assert ncu.port_launches_only(launches, ["flash2_fwd"]) == [launches[1]]


@pytest.mark.parametrize("text, words", [
    ("==PROF== no kernels", "no CSV rows"),
    (HEADER + "\n" + row(1, "k", "dram__bytes_read.sum", "byte", "1"), "lacks one of"),
    (HEADER + "\n" + row(1, "k", "dram__bytes_read.sum", "furlong", "1"), "unknown unit"),
    ('"ID","Kernel Name"\n"1","k"', "lacks columns"),
])
def test_malformed_ncu_output_says_what_is_wrong(text, words):
    with pytest.raises(ncu.NcuParseError, match=words):
        ncu.parse_ncu_csv(text)


def test_setup_launches_of_the_same_kernel_are_left_out():
    """ring: the other devices' steps (setup) launch ring_step too; they run first."""
    launches = [ncu.NcuLaunch(i, "ring_step", float(i), 1.0) for i in range(6)]
    kept = ncu.port_launches_only(launches, ["ring_step"] * 3, ["ring_step"] * 3)
    assert [l.launch_id for l in kept] == [3, 4, 5]
    with pytest.raises(ncu.NcuParseError, match="exactly one run"):
        ncu.port_launches_only(launches[:5], ["ring_step"] * 3, ["ring_step"] * 3)


def test_profile_must_hold_exactly_one_run_of_the_port():
    twice = [ncu.NcuLaunch(i, "flash2_fwd", 1.0, 1.0) for i in range(2)]
    with pytest.raises(ncu.NcuParseError, match="exactly one run"):
        ncu.port_launches_only(twice, ["flash2_fwd"])


@pytest.mark.parametrize("name, wl", [
    ("flash2", Workload(batch=2, heads=4, seq_q=4096, head_dim=64, causal=True)),
    ("standard", Workload(batch=1, heads=2, seq_q=1024, head_dim=64)),
])
def test_compare_pairs_declared_launches_with_their_simulated_kernels(name, wl):
    """Measured bytes equal to the counts give ratios of 1; each row carries its own
    kernel's counts and the timing model's post-L2 estimate (never above the counts)."""
    gpu = get_gpu("h100-sxm")
    plan = get_algorithm(name).plan(wl, gpu, gpu.smem_bytes_per_block)
    sim = simulate(name, wl, gpu, compute=False)
    spec = ports.port_launches(name, wl, plan, sim.extra, gpu=gpu)
    records = {k.name: k for k in sim.kernels}
    measured = [ncu.NcuLaunch(i, l.kernel, float(records[l.sim_kernel].counters[0]),
                              float(records[l.sim_kernel].counters[1]))
                for i, l in enumerate(spec.launches)]
    rows = ncu.compare(spec.launches, sim.kernels, sim.time.kernels, measured)
    assert [r.kernel for r in rows] == [l.kernel for l in spec.launches]
    assert sum(r.counted_read + r.counted_write for r in rows) == sim.hbm_bytes
    for r in rows:
        assert r.read_ratio == pytest.approx(1.0)
        assert r.write_ratio in (None, pytest.approx(1.0))
        assert r.modelled_total <= r.counted_read + r.counted_write
        assert r.as_dict()["measured_over_modelled"] >= 1.0 - 1e-9
    table = ncu.render_rows(rows, "markdown")
    assert table.count("\n") == len(rows) + 1 and "ncu/modelled" in table
    with pytest.raises(ncu.NcuParseError, match="declared launches"):
        ncu.compare(spec.launches, sim.kernels, sim.time.kernels, measured[:-1] if len(measured) > 1 else [])


PIPE_SAMPLE = "\n".join([
    HEADER,
    row(1, "flash2_fwd", "dram__bytes_read.sum", "byte", "1,000"),
    row(1, "flash2_fwd", "dram__bytes_write.sum", "byte", "500"),
    row(1, "flash2_fwd", "smsp__inst_executed_pipe_fma.sum", "inst", "3,000,000"),
    row(1, "flash2_fwd", "smsp__inst_executed_pipe_alu.sum", "inst", "1,500,000"),
    row(1, "flash2_fwd", "smsp__inst_executed_pipe_xu.sum", "inst", "500,000"),
])


def test_pipe_instruction_counts_are_parsed_only_when_asked_for():
    launch = ncu.parse_ncu_csv(PIPE_SAMPLE, pipes=True)[0]
    assert launch.pipe_instructions == {"fma": 3e6, "alu": 1.5e6, "xu": 5e5}
    assert ncu.parse_ncu_csv(PIPE_SAMPLE)[0].pipe_instructions == {}
    without_xu = "\n".join(PIPE_SAMPLE.splitlines()[:-1])
    with pytest.raises(ncu.NcuParseError, match="smsp__inst_executed_pipe_xu.sum"):
        ncu.parse_ncu_csv(without_xu, pipes=True)
    not_a_number = PIPE_SAMPLE.replace('"500,000"', '"n/a"')
    with pytest.raises(ncu.NcuParseError, match="run without --pipes"):
        ncu.parse_ncu_csv(not_a_number, pipes=True)


def test_counted_pipe_instructions_are_what_the_timing_model_prices():
    """FMA: other less ALU ops; ALU: maxes/selects and conversions (two per instruction);
    XU: the exps — each a warp-instruction per 32 lanes."""
    wl = Workload(batch=1, heads=2, seq_q=1024, head_dim=64)
    gpu = get_gpu("h100-sxm")
    sim = simulate("flash2", wl, gpu, compute=False)
    k = sim.kernels[0]
    c = sim.counts
    counted = ncu.counted_pipe_instructions(k)
    assert counted["fma"] == (c["other_flops"] - c["alu_ops"]) / 32
    assert counted["alu"] == (c["alu_ops"] + c["convert_ops"] / 2) / 32
    assert counted["xu"] == c["exp_ops"] / 32
    plan = get_algorithm("flash2").plan(wl, gpu, gpu.smem_bytes_per_block)
    spec = ports.port_launches("flash2", wl, plan, sim.extra, gpu=gpu)
    measured = [ncu.NcuLaunch(i, l.kernel, 1.0, 1.0, {p: 2 * v for p, v in counted.items()})
                for i, l in enumerate(spec.launches)]
    rows = ncu.compare_pipes(spec.launches, sim.kernels, measured)
    assert all(r.ratio(p) == pytest.approx(2.0) for r in rows for p in ("fma", "alu", "xu"))
    assert rows[0].as_dict()["measured_over_counted"]["alu"] == pytest.approx(2.0)
    table = ncu.render_pipe_rows(rows, "markdown")
    assert "alu ncu M" in table and table.count("\n") == len(rows) + 1


def load_driver():
    """benchmarks/ncu_dram.py as a module (it is a script, not in a package)."""
    return load_benchmark("ncu_dram")


def test_ncu_driver_passes_algorithm_options_to_the_plan_and_the_simulation():
    """--option path=upproject profiles mla's up-projected port, simulated the same way."""
    driver = load_driver()
    a = driver.parse_args(["mla", "--decode", "--seq", "1024", "--heads", "16", "--hw", "h100",
                           "--option", "path=upproject", "--option", "splits=2"])
    _, _, sim, spec = driver.setup(a)
    assert [l.kernel for l in spec.launches] == ["mla_upproject", "mla_up_attn", "mla_up_combine"]
    assert {l.sim_kernel for l in spec.launches} == {k.name for k in sim.kernels}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        driver.algorithm_options(driver.parse_args(["mla", "--option", "upproject"]))


def test_ncu_driver_says_plainly_what_is_missing(capsys):
    """Without a GPU (or without ncu) the driver exits 2 with one line naming what is missing
    and the fix, not a traceback."""
    driver = load_driver()
    from attnsim import gpu as backend
    if backend.gpu_available()[0]:
        pytest.skip("a GPU is present: the driver would profile")
    assert driver.main(["flash2", "--seq", "256", "--hw", "h100", "--ncu", "/nonexistent"]) == 2
    assert "no GPU to profile" in capsys.readouterr().err
