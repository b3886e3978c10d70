"""benchmarks/sass_schedule.py reads a compiled FlashAttention-3 forward's steady-state loop.

The build needs nvcc, a ptxas and cuobjdump, which CI does not have; what turns their
listing into the counts ``algorithms/flash3.py`` prices is tested here on a listing written
in cuobjdump's format.
"""
import pytest

from _benchmarks import load_benchmark

NAME = ("_ZN5flash15compute_attn_wsI23Flash_fwd_kernel_traitsILi64ELi192ELi128ELi16ELi2ELb0ELi1E"
        "N7cutlass6half_tEELb{causal}ENS_29StaticPersistentTileSchedulerEEEv16Flash_fwd_params")


def listing(causal: int, loop: list[str], before_loop=("MOV R1, c[0x0][0x28]",)) -> str:
    """A cuobjdump -sass function: ``before_loop``, then ``loop`` closed by a branch back to
    its first instruction."""
    lines = [f"\t\tFunction : {NAME.format(causal=causal)}"]
    address = 0
    for ins in before_loop:
        lines.append(f"        /*{address:04x}*/                   {ins} ;    /* 0x0 */")
        address += 0x10
    top = address
    for ins in loop + [f"@P1 BRA 0x{top:x}"]:
        lines.append(f"        /*{address:04x}*/                   {ins} ;    /* 0x0 */")
        address += 0x10
    lines.append(f"        /*{address:04x}*/                   EXIT ;    /* 0x0 */")
    return "\n".join(lines) + "\n"


LOOP = ["BAR.SYNC.DEFER_BLOCKING R0, 0x180",
        "WARPGROUP.ARRIVE",
        "HGMMA.64x128x16.F32 R24, gdesc[UR28], RZ, !UPT",
        "FMUL.FTZ R88, R88, R2",                          # O's rescaling, beside Q K^T
        "HGMMA.64x128x16.F32 R24, gdesc[UR28], R24, gsb0",
        "HGMMA.64x64x16.F32 R88, R148, gdesc[UR8].tnspB, R88, gsb0",
        "WARPGROUP.DEPBAR.LE gsb0, 0x1",
        "FMNMX.FTZ R3, R24, R25, !PT",                    # the row max, beside P V
        "SHFL.BFLY PT, R4, R3, 0x2, 0x1f",
        "WARPGROUP.DEPBAR.LE gsb0, 0x0",                  # every wgmma retired
        "FFMA.FTZ R24, R24, R5, -R6",
        "MUFU.EX2 R24, R24",
        "@!P0 MUFU.EX2 R25, R25",                         # predicated: still an exp
        "FADD.FTZ R7, R24, R25",
        "F2FP.F16.F32.PACK_AB R148, R25, R24"]


def test_counts_the_softmax_before_and_after_the_wait_for_every_wgmma():
    sass = load_benchmark("sass_schedule")
    (kernel,) = sass.schedule_of(listing(0, LOOP))
    assert (kernel["head_dim"], kernel["block_q"], kernel["block_k"], kernel["causal"]) == \
        (64, 192, 128, False)
    assert kernel["loop_instructions"] == len(LOOP) + 1
    assert kernel["before_full_wait"] == {"xu": 0, "fma": 1, "alu": 1, "wgmma": 3}
    assert kernel["after_full_wait"] == {"xu": 2, "fma": 2, "alu": 1, "wgmma": 0}
    (causal,) = sass.schedule_of(listing(1, LOOP))
    assert causal["causal"] is True


def test_the_steady_state_loop_is_the_innermost_that_issues_wgmma():
    """An outer loop around it (the persistent kernel's tiles) and a loop without wgmma (the
    producer's loads) are not read; a kernel that never waits for every wgmma has its whole
    softmax after the GEMMs (nothing is credited as overlapped)."""
    sass = load_benchmark("sass_schedule")
    producer = ["UTMALDG.4D [UR8], [UR16]", "SYNCS.ARRIVE.TRANS64 RZ, [UR8], RZ",
                "@P2 BRA 0x10"]
    text = listing(0, ["NOP"] + LOOP + ["IADD3 R9, R9, 0x1, RZ"], before_loop=(
        "MOV R1, c[0x0][0x28]",) + tuple(producer))
    body = sass.sass_functions(text)[NAME.format(causal=0)]
    loop = sass.steady_state_loop(body)
    assert loop[0] == "NOP" and loop[-1].startswith("BRA") and len(loop) == len(LOOP) + 3
    no_wait = [ins for ins in LOOP if not ins.startswith("WARPGROUP.DEPBAR.LE gsb0, 0x0")]
    (kernel,) = sass.schedule_of(listing(0, no_wait))
    assert kernel["before_full_wait"] == {"xu": 0, "fma": 0, "alu": 0, "wgmma": 0}
    assert kernel["after_full_wait"]["xu"] == 2 and kernel["after_full_wait"]["wgmma"] == 3


@pytest.mark.parametrize("release, isa", [((12, 3), "8.3"), ((12, 8), "8.7"), ((13, 0), "9.0")])
def test_the_ptx_is_lowered_to_what_the_ptxas_reads(release, isa):
    assert load_benchmark("sass_schedule").PTX_ISA_OF_CUDA[release] == isa


def test_a_missing_repository_or_tool_is_one_line_and_exit_2(tmp_path, capsys):
    sass = load_benchmark("sass_schedule")
    missing = str(tmp_path / "missing")
    assert sass.main(["--flash-attention", missing, "--cutlass", missing,
                      "--ptxas", missing, "--cuobjdump", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sass_schedule.py: error:") and "\n" not in err
    assert "--flash-attention" in err


def test_the_steady_state_loop_issues_both_gemms():
    """A shorter loop around the P V GEMM alone (one wgmma group) is not the tile loop."""
    sass = load_benchmark("sass_schedule")
    pv_only = ["HGMMA.64x128x16.F32 R24, R176, gdesc[UR8].tnspB, R24, gsb0",
               "WARPGROUP.DEPBAR.LE gsb0, 0x0", "MUFU.EX2 R3, R3"]
    # the tile loop first, then a short loop around P V alone branching back into itself
    text = listing(0, LOOP)
    body = sass.sass_functions(text)[NAME.format(causal=0)]
    end = body[-1][0]
    extra = [(end + 0x10 * (i + 1), ins) for i, ins in enumerate(pv_only)]
    extra.append((end + 0x10 * (len(pv_only) + 1), f"@P3 BRA 0x{end + 0x10:x}"))
    loop = sass.steady_state_loop(body + extra)
    assert sass.wgmma_groups(loop) == 2 and loop[0].startswith("BAR.SYNC")


BWD_NAME = ("_ZN5flash15compute_dqkv_wsI23Flash_bwd_kernel_traitsILi128ELi64ELi128ELi12ELb1ELb0ELb1E"
            "Li1ELi2ELi1ELi1EN7cutlass6half_tEELb0EN4cute9TiledCopyEEEv16Flash_bwd_params")
BWD_LOOP = ["BAR.SYNC.DEFER_BLOCKING R0, 0x120",
            "WARPGROUP.ARRIVE",
            "HGMMA.64x64x16.F32 R24, gdesc[UR8], RZ, !UPT, gsb0",        # dQ = dS K
            "WARPGROUP.DEPBAR.LE gsb0, 0x0",
            "FMUL.FTZ R90, R90, R2",                                      # not beside dP
            "WARPGROUP.ARRIVE",
            "HGMMA.64x64x16.F32 R40, gdesc[UR12], RZ, !UPT, gsb0",       # S
            "HGMMA.64x64x16.F32 R72, gdesc[UR16], RZ, !UPT, gsb0",       # dP
            "WARPGROUP.DEPBAR.LE gsb0, 0x1",                              # S in, dP in flight
            "FFMA.FTZ R40, R40, R3, -R4",
            "MUFU.EX2 R40, R40",
            "WARPGROUP.DEPBAR.LE gsb0, 0x0",                              # dP in
            "MUFU.EX2 R41, R41",
            "FADD.FTZ R72, R72, -R5",
            "F2FP.F16.F32.PACK_AB R100, R41, R40",
            "WARPGROUP.ARRIVE",
            "HGMMA.64x64x16.F32 R104, R100, gdesc[UR20], R104, gsb0",    # dV, dK
            "WARPGROUP.DEPBAR.LE gsb0, 0x0"]


def test_the_backward_counts_the_softmax_beside_its_dp_gemm():
    """Between the wait that leaves dP in flight and the wait for it: beside dP; the rest of
    the loop (the dQ GEMM's, after dP, and dV/dK's): elsewhere."""
    sass = load_benchmark("sass_schedule")
    text = listing(0, BWD_LOOP).replace(NAME.format(causal=0), BWD_NAME)
    assert sass.schedule_of(text) == []                  # not a forward kernel
    (kernel,) = sass.backward_schedule_of(text)
    assert (kernel["head_dim"], kernel["block_q"], kernel["block_k"], kernel["causal"]) == \
        (128, 64, 128, False)
    assert kernel["loop_instructions"] == len(BWD_LOOP) + 1
    assert kernel["beside_dp_gemm"] == {"xu": 1, "fma": 1, "alu": 0, "wgmma": 0}
    assert kernel["elsewhere"] == {"xu": 1, "fma": 2, "alu": 1, "wgmma": 4}
    table = sass.backward_table([kernel])
    assert "64 x 128" in table and "1 / 1" in table
