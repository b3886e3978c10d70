"""The prose of the section "Where the model is still off", one function per paragraph.

Each bullet names a group of points the model still misses and the mechanism it lacks,
quoting the diagnostics (``diagnostics``, ``fa3_diagnostics``) that back the explanation;
the last paragraph says what FlashAttention-3's bars say of its overlap.
``document.still_off_section`` puts them under their heading with the tables.
"""
from __future__ import annotations

from algorithms.kernels.common import WGMMA_ROWS, row_padding
from algorithms.standard import aten_softmax
from hwmodels.timing import TimingOptions

from .charts import (FA2_FWD_BWD_CHARTS, FA3_CHARTS, FA3_D64_OTHER_KERNELS, backward_chart_range,
                     chart_points,
                     chart_ratio_range, fa1_chart_range, fa2_chart_range, fwd_bwd_chart_range,
                     standard_chart_ratios)
from .diagnostics import (MAG_MAMF_TFLOPS, WH_REF_GEMM_TFLOPS, backward_gap_text,
                          eager_backward_shares, eager_backward_without_product,
                          eager_softmax_mechanism,
                          eager_add_at_loaded_latency, eager_causal_extra_us,
                          eager_copy_share,
                          eager_implied_bandwidth, eager_mask_l2_limit,
                          fa1_pass_ratios, fa2_a100_lowest, fa2_layout,
                          fa2_occupancy_sentence, implied_mma_sync_fraction, lockstep_effect,
                          wh_ref_gemm_sensitivity)
from .fa3_diagnostics import (FA3_SHORT, PIPES_ALONE, fa3_1075_ratio_text, fa3_d64_fixed_shares,
                              fa3_d64_unoverlapped, fa3_fp16_ranges, fa3_issue_against_sass,
                              fa3_pingpong_what_if, fa3_pipe_loads_per_tile,
                              fa3_short_fp8_vs_fp16, fa3_switch_range, fp8_chart_ranges_text,
                              fp8_excess_per_cta, fp8_kernel_what_if, fp8_length_dependence,
                              fp8_over_fp16_model, fp8_over_fp16_published, sass_schedule)
from .figures import (B200_EAGER_TFLOPS, FA1_BWD_PUBLISHED, FA1_FWD_PUBLISHED, STANDARD_EAGER,
                      FA2_A100_LOG_MS, FA3_1075_EAGER_MS, FA3_1777_TFLOPS, FA3_BLOG_TFLOPS,
                      FA3_TABLE2_MS,
                      TB_DEVGPU_FA3_TFLOPS, benchmark_attn_fwd_ratios,
                      benchmark_attn_ratios, board_time_ratios, fa1_a100_range,
                      fa1_tables_time_ratios,
                      fa2_a100_log_ratios, fa2_over_fa1_by_pass,
                      fa2_over_fa1_extremes, fa2_over_fa1_head_grid_max,
                      fa3_1075_eager_ratios, fa3_1777_ratios, fa3_blog_tflops,
                      fa3_pingpong_gain, fa3_pipelining_gain,
                      fa_1438_h200_over_h100, source_ratios,
                      pt_sdpa_a100_ratios, pt_sdpa_h100_ratios, sdpa_over_flash2,
                      tb2296_on)
from .predictions import SEQS, exp_over_mma_time, model_gpu, peak_tflops


def fa2_on_h100_bullet() -> str:
    """FlashAttention-2 on the H100 is still predicted too fast: by head dimension, the lockstep
    switch, the SDPA log's board and the `mma.sync` ratio it would take."""
    return (
        "- **FlashAttention-2 on the H100 is still predicted too fast, by less** (the FA-2 "
        "chart bars, the SDPA log and the measured WH-REF and FA3-1791 points: "
        f"{lockstep_effect()['h100_on'][0]:.2f}–{lockstep_effect()['h100_on'][1]:.2f}, median "
        f"{lockstep_effect()['h100_on'][2]:.2f}; through them the low end of the FA-3/FA-2 "
        "speedup). By head dimension the chart bars are "
        + "; ".join("d = {}: {:.2f}-{:.2f} ({} x {} tiles, CTAs per SM: {}, shared-memory "
                    "time {:.2f}x the tensor time)"
                    .format(d, *chart_ratio_range("flash2", d), *fa2_layout(d))
                    for d in (64, 128, 256))
        + " (the release's tiles, `flash2 --tiles release`, as every FA-2 figure here is "
        "predicted: at d = 256 the release runs 64 x 64 tiles, two CTAs to the H100's "
        "228 KiB, where the simulator's own plan takes one CTA of 64 x 128; at d = 64 and "
        "128 the two plans agree). " + fa2_occupancy_sentence() + " Where shared memory "
        "outweighs the tensor cores (d = 256) every bar of both charts is matched, so the "
        "rates the "
        "rest is priced with (the `mma.sync` ceiling, shared memory at 128 B/clk, the SFU) "
        "are not what is off; the gap is at d = 128 and 64, where their tensor and "
        "shared-memory times are close: what is missing acts there (a candidate: the two "
        "pipes overlapping less than the model's max(tensor, shared memory) lets them). "
        "The model no longer lets resident CTAs hide each other's softmax (`lockstep_ctas`): "
        "the chains in flight on an SM are those a CTA staggers on purpose, FlashAttention-3's "
        "ping-pong barriers, which its paper (§3.1) introduces because "
        "the overlap has to be forced ([FA3-pingpong]); two FA-2 CTAs that start together on "
        "identical work reach their GEMMs together and their softmax together, and FA-2's "
        "published rate per SM and clock is about the same on the A100 and the H100, as a "
        "serial chain predicts. Causal grids, whose CTAs fall out of step, show the same, so "
        "the SMSP's issue and register-file ports shared by `mma.sync` and softmax warps may "
        "be the cause as much as phase; `benchmarks/gpu_overlap.py` times two CTAs per SM "
        "alternating `mma.sync` and `ex2` phases, which tells the two apart. With every "
        "resident CTA "
        "counted as an independent chain (`--no-lockstep-ctas`: mean-value analysis of "
        "unsynchronized chains) the same points were "
        f"{lockstep_effect()['h100_off'][0]:.2f}–{lockstep_effect()['h100_off'][1]:.2f} "
        f"(median {lockstep_effect()['h100_off'][2]:.2f}): the simulator's FA-2 plan fits "
        "two CTAs per SM (the release's 128 x 64 tiles at d = 128, 64 KiB, 96 KiB of "
        "accumulators), and their mutual hiding was most of the gap. The same switch moves "
        "the A100 sweep's best forward from "
        f"{lockstep_effect()['a100_best_off'][0]:.0f}% of peak (d = "
        f"{lockstep_effect()['a100_best_off'][1]}) to "
        f"{lockstep_effect()['a100_best_on'][0]:.0f}% (d = "
        f"{lockstep_effect()['a100_best_on'][1]}) against the published 70–73%: the A100 "
        "lands a little below, the H100 still above, so the rest of the gap is specific to the "
        "H100 running sm80 code. "
        "What remains is largest at N = 512 (causal above all) and in the SDPA log, whose "
        "backend and FlashAttention version are not stated; in the same harness in August 2024 "
        "([TB2443], GPU not named) SDPA's forward took "
        f"{sdpa_over_flash2()[0]:.3f}–{sdpa_over_flash2()[1]:.3f}x the time of flash-attn's "
        "FA-2 at the FA-3 paper's shapes (d = 128, N = 512–16k), so the log's SDPA is most "
        "likely PyTorch's own copy of the FA-2 kernel and its points are FA-2 points. Which "
        "H100 the log ran on is not stated either, and the harness's boards vary: its "
        "maintainers report that its CI runs on H100 PCIe spot instances ([TB-CI]) and that "
        f"FA-3 reached {TB_DEVGPU_FA3_TFLOPS:.0f} TFLOP/s at (8, 16, 8192, 128) on their "
        "development H100s, where the paper's board reaches "
        f"{FA3_CHARTS[('A', 128, False, 'fp16')][8192][2]} at that length ([TB-DEVGPU]). "
        + pt_sdpa_h100_sentence() +
        "Predicted for the h100-pcie "
        "model, the SDPA points would be "
        f"{min(tb2296_on('h100-pcie')):.2f}–{max(tb2296_on('h100-pcie')):.2f}; the page keeps "
        "them on the SXM5, as the log says H100 and nothing more. The "
        "`mma.sync` path is priced at "
        "the ratio of `mma.sync` to `wgmma` throughput measured by one microbenchmark on one "
        "board (LUO-MMA: 0.653 against about 0.96 of the H800's peak, "
        f"{model_gpu('h100-sxm').mma_sync_fraction_of_peak:.3f}; FA-3's 'about 2/3' agrees) "
        "times the MAMF fraction measured for `wgmma` GEMMs; for the remaining points to "
        "centre on 1 with nothing else changed, that ratio would have to be "
        f"{implied_mma_sync_fraction()[0]:.2f} (their ratios then "
        f"{implied_mma_sync_fraction()[1][0]:.2f}–{implied_mma_sync_fraction()[1][1]:.2f}). "
        "Not priced yet: the `ldmatrix` operand traffic per MMA queueing in the shared-memory "
        "pipe at H100 tensor rates (the released kernel re-reads its Q tile from shared "
        "memory on every K/V tile, [FA2-src]), and how much of the `mma.sync` ceiling a real "
        "sm80 GEMM reaches on the H100. The FA-3 paper's backward charts show the same gap in "
        "FA-2's backward (" + backward_gap_text() + "): one CTA per SM there, shared memory "
        "above the tensor time, and the same `mma.sync` path, so whatever is missing is not "
        "peculiar to the forward's two resident CTAs. A GPU session should time an sm80 "
        "CUTLASS GEMM and FA-2 with one and two CTAs per SM on the H100 before anything else "
        "is changed.")


def standard_attention_bullet() -> str:
    """Standard attention as PyTorch eager runs it: the program, its copies and mask, its
    backward, and what remains of pricing."""
    return (
        "- **Standard attention as PyTorch eager runs it, forward and backward.** The charts' "
        "standard "
        "attention is PyTorch eager code, flash-attention's benchmark function "
        "`attention_pytorch` ([FA-eager]), and its bars are priced with that program: "
        "`standard --program pytorch-eager` (`algorithms/standard/pytorch_eager.py` lists its "
        "kernels) adds to Algorithm 0's GEMM, softmax and GEMM the copies that `rearrange` and "
        "`einsum` make of Q, K and V (a slice of the packed qkv cannot be viewed as "
        "(B·H, N, d)) and, causal, the mask built in fp32 per call (full, triu, cast) and "
        "added to S out of place. Priced as Algorithm 0 the bars were "
        f"{min(standard_chart_ratios('algorithm0')):.2f}–"
        f"{max(standard_chart_ratios('algorithm0')):.2f}; as the benchmark's program they are "
        f"{min(standard_chart_ratios('pytorch-eager')):.2f}–"
        f"{max(standard_chart_ratios('pytorch-eager')):.2f} (the copies are "
        f"{eager_copy_share():.0%} of the predicted HBM traffic at N = 512, d = 128). The K "
        "copy transposes (`rearrange(k, 'b s h d -> (b h) d s')`): ATen walks its contiguous "
        "output, so the 32 loads of a warp fall 3·H·d·e bytes apart, each in a sector of its "
        "own, and L2 moves each whole 32-byte sector for the 2 bytes a thread uses "
        "([CUDA-BP]; the next d's CTAs take the rest of the sector from L2, so DRAM moves each "
        "byte once): `read_sector_use`, without which (`--no-sector-use`) the bars were "
        f"{min(standard_chart_ratios('pytorch-eager', TimingOptions(sector_use=False))):.2f}–"
        f"{max(standard_chart_ratios('pytorch-eager', TimingOptions(sector_use=False))):.2f}. "
        "What "
        "remains is pricing, not the program, and it is larger than it looked: the model "
        "used to count the P V GEMM's re-reads of V as DRAM traffic, because it took the P "
        "row panels of the resident CTAs (each read by one CTA, once) for part of L2's "
        "working set; the CTAs of a head read V together, k-chunk by k-chunk, and it stays in "
        "L2 (`algorithms/kernels/gemm.py: l2_working_set`), so the bmm is priced at one pass "
        "over P and the bars are optimistic by more. The causal add reads the mask once per "
        "head, and L2 serves the re-reads only while what passes through it between two "
        "heads' reads of an entry fits in the part of L2 a working set may use: ATen walks "
        "the output head after head, so that is a head's S, mask and output, 3·e·N² bytes, "
        f"up to N = {eager_mask_l2_limit()} in fp16 on the H100; beyond it most of the mask "
        "comes from DRAM for every head. Causality adds "
        f"{eager_causal_extra_us()[1]:.0f} µs to the predicted time at N = 512, d = 128, "
        f"where charts A and B imply {eager_causal_extra_us()[0]:.0f} µs, and the non-causal "
        "N = 512 bars are still optimistic. " + eager_loaded_latency_text() + " "
        "Measured rather than read off a chart, the "
        "program shows the same: its forward as the baseline of FA-3's fp8 benchmark on an "
        "H100 PCIe ([FA3-1075]: non-causal, d = 128, N = "
        + ", ".join(str(n) for n in FA3_1075_EAGER_MS)
        + ") is predicted at " + ", ".join(f"{r:.2f}" for r in fa3_1075_eager_ratios())
        + " of the measured rates. " + eager_softmax_switch_text() + " "
        + eager_backward_text())


def eager_loaded_latency_text() -> str:
    """Why ATen's broadcast add and permuted copies run below the copy bandwidth, and what
    pricing them at the DRAM's loaded latency changes."""
    add = eager_add_at_loaded_latency()
    streams = TimingOptions(loaded_latency=False)
    as_streams = standard_chart_ratios("pytorch-eager", streams)
    causal_streams = standard_chart_ratios("pytorch-eager", streams, causal=True)
    causal = standard_chart_ratios("pytorch-eager", causal=True)
    return (
        "ATen's elementwise loop vectorizes contiguous operands only ([ATEN-LOOP]): the "
        "broadcast add (its mask has stride 0 over B·H) and the copies of permuted slices run "
        "its legacy loop, whose threads take their elements one after the other, each loaded, "
        "added and stored before the next is loaded (the store may alias the next load; its "
        "compiled code issues LDG, LDG, STG four times over), so a thread holds one element "
        "of each operand in flight: {round_bytes} bytes a round "
        "for the add in fp16, {kib_per_sm:.0f} KiB an SM at full occupancy. Little's law "
        "then bounds it by the DRAM's latency, and that latency grows with the load: the "
        "model takes a round to last what a round of RRZE gpu-benches' stream kernel lasts "
        "at the same DRAM utilization, from its occupancy sweep ([STREAM-OCC], "
        "`loaded_latency`; GH200's for the SXM5, the board's own for the A100 and the H100 "
        "PCIe), and solves for the utilization the rounds produce. At N = 8192, d = 128 the "
        "add's rounds settle at {utilization:.0%} of the copy bandwidth, {round_ns:.0f} ns a "
        "round. Priced as streams at the copy bandwidth (`--no-loaded-latency`) the chart "
        "bars were {lo:.2f}–{hi:.2f}, the causal ones {clo:.2f}–{chi:.2f}; the causal ones "
        "are now {nlo:.2f}–{nhi:.2f}."
    ).format(**add, lo=min(as_streams), hi=max(as_streams), clo=min(causal_streams),
             chi=max(causal_streams), nlo=min(causal), nhi=max(causal))


def eager_softmax_switch_text() -> str:
    """Where the eager forward's optimism grows: across the row length at which PyTorch's
    softmax changes kernel, on the PCIe log and on the SXM5 charts' non-causal bars."""
    short, long_ = split_at_warp_softmax(zip(FA3_1075_EAGER_MS, fa3_1075_eager_ratios()))
    charts = {d: split_at_warp_softmax((n, pred / pub) for _, dd, causal, n, algorithm, pub, pred
                                       in chart_points()
                                       if algorithm == "standard" and dd == d and not causal)
              for d in (64, 128)}

    def span(values):
        lo, hi = f"{min(values):.2f}", f"{max(values):.2f}"
        return lo if lo == hi else f"{lo}–{hi}"
    return (
        f"Those ratios are {span(short)} at N ≤ {WARP_SOFTMAX_MAX_ROW} and {span(long_)} "
        f"above, where PyTorch's row softmax changes kernel (ATen's host_softmax: rows of at "
        f"most {WARP_SOFTMAX_MAX_ROW} elements go to a warp a row, held in registers and read "
        "once; longer rows to a CTA a row, whose cunn_SoftMaxForward reads the row three "
        "times, for its max, its sum of exps and its output, where a later variant keeps it "
        "in shared memory); on the SXM5 charts' non-causal bars the step is "
        + ("smaller" if all(max(b) - max(a) < max(long_) - max(short)
                            for a, b in charts.values()) else "comparable")
        + " ("
        + "; ".join(f"d = {d}: {span(a)} to {span(b)}" for d, (a, b) in charts.items())
        + "). The same benchmark on a B200, a GPU the model does not price ([FA-1589]: "
        "PyTorch 2.8, d = 64, non-causal), shows the step in the forward alone: "
        + b200_eager_step_text()
        + ". " + aten_softmax_text())


def aten_softmax_text() -> str:
    """What the model prices of ATen's two softmax kernels, and what it changes."""
    per_row = {n: aten_softmax.library_ops_per_element(n, 2)["fma"] for n in (1024, 2048)}
    without = fwd_bwd_chart_range("a100-80gb", "standard", TimingOptions(accurate_math=False),
                                  options=STANDARD_EAGER)
    return (
        "The model counts the two kernels apart (`algorithms/standard/aten_softmax.py`): the "
        "CTA-a-row kernel takes the exponential twice an element and re-reads the row on "
        "chip, and both pay for the accurate expf and the IEEE division PyTorch compiles "
        "(its kernels are built without fast math: PyTorch PR #122970 kept `std::exp` "
        "over `__expf`), routines of several instructions each read off their SASS "
        "([ATEN-SASS]): {} FMA-pipe instructions an element beside the counted ops at "
        "N ≤ {}, {} above (`accurate_math`). At N = 2048, d = 64 the kernel is bound by {} "
        "on the H100 ({} fp32 lanes an SM) and by {} on the A100 ({}); without the routines "
        "(`--no-accurate-math`) the A100 forward + backward bars would be {:.2f}–{:.2f}. "
        "`benchmarks/profile_eager.py` times the softmax step on its own, and its default "
        "lengths (512 and 8192) fall on either side.".format(
            per_row[1024], WARP_SOFTMAX_MAX_ROW, per_row[2048],
            eager_softmax_mechanism("h100-sxm"), model_gpu("h100-sxm").fp32_lanes,
            eager_softmax_mechanism("a100-80gb"), model_gpu("a100-80gb").fp32_lanes,
            *without))


def b200_eager_step_text() -> str:
    """The B200 log's eager forward and backward across the warp softmax's longest row."""
    short = {n: v for n, v in B200_EAGER_TFLOPS.items() if n <= WARP_SOFTMAX_MAX_ROW}
    long_ = {n: v for n, v in B200_EAGER_TFLOPS.items() if n > WARP_SOFTMAX_MAX_ROW}
    (n0, (f0, b0)), (n1, (f1, b1)) = max(short.items()), min(long_.items())
    stays = all(f < f0 for f, _ in long_.values())
    return (f"the forward falls from {f0:.2f} TFLOP/s at N = {n0} to {f1:.2f} at {n1}"
            + (f" and stays below {f0:.2f} at every longer length" if stays else "")
            + f", while the backward rises from {b0:.2f} to {b1:.2f}")



WARP_SOFTMAX_MAX_ROW = aten_softmax.WARP_SOFTMAX_MAX_ELEMENTS   # the warp softmax's longest row


def split_at_warp_softmax(points) -> tuple[list[float], list[float]]:
    """Ratios of (N, ratio) points at N <= the warp softmax's longest row, and above it."""
    points = list(points)
    return ([r for n, r in points if n <= WARP_SOFTMAX_MAX_ROW],
            [r for n, r in points if n > WARP_SOFTMAX_MAX_ROW])


def eager_backward_text() -> str:
    """The eager program's backward and forward + backward bars, what ATen's softmax product
    kernel adds, and the bandwidth the published times imply."""
    h_lo, h_hi = eager_implied_bandwidth("h100-sxm")
    a_lo, a_hi = eager_implied_bandwidth("a100-80gb")
    shares = eager_backward_shares()
    return (
        "Its backward, autograd through the same program (`--pass bwd`: bmm's two products; "
        "softmax's backward, which ATen runs as two kernels, an elementwise product "
        "tmp = dP ∘ P written out whole and the row kernel dS = tmp − P · rowsum(tmp) that "
        "reads it back ([PT-SOFTMAX]); baddbmm's two products each followed by an "
        "out-of-place multiply by softmax_scale; and unbind's stack of the three gradients "
        "into the packed one, `algorithms/standard/pytorch_eager_backward.py`), lands at "
        "{:.2f}–{:.2f} on the FA-3 paper's backward charts; with the product kernel's time "
        "taken out, as the model ran softmax's backward before (one row kernel over P and "
        "dP), the same bars would be {:.2f}–{:.2f}. At N = 2048, d = 128 the product takes "
        "{:.0%} of the predicted backward, the row kernel {:.0%}, the GEMMs {:.0%}, the "
        "copies and multiplies {:.0%}. The whole program, forward and backward, lands on the "
        "FA-2 paper's charts at {:.2f}–{:.2f} on the A100 and {:.2f}–{:.2f} on the H100, "
        "where FlashAttention-2's bars on the same charts, priced with the same HBM and "
        "tensor rates, land at {:.2f}–{:.2f} and {:.2f}–{:.2f}: what stays optimistic there "
        "is most likely the forward's share (above), since the backward bars alone land near 1. Read as bandwidth, the published forward + backward "
        "times move the program's DRAM traffic (the model's estimate, after L2) at "
        "{:.2f}–{:.2f} of the copy bandwidth on the H100 and at "
        "{:.2f}–{:.2f} on the A100. No microbenchmark of PyTorch's row softmax or of "
        "memory-bound batched GEMMs against a copy on the same board is published for these "
        "GPUs; `benchmarks/profile_eager.py` times the program step by step on a GPU, "
        "forward and backward (`--pass bwd`), and should come before a mechanism is added "
        "for the forward's kernels."
    ).format(*backward_chart_range("standard"), *eager_backward_without_product(),
             shares["softmax product"], shares["softmax row kernel"], shares["GEMMs"],
             shares["elementwise"], *fa2_chart_range("a100-80gb", "standard"),
             *fa2_chart_range("h100-sxm", "standard"), *fa2_chart_range("a100-80gb", "flash2"),
             *fa2_chart_range("h100-sxm", "flash2"), h_lo, h_hi, a_lo, a_hi)


def fa3_fp8_bullet() -> str:
    """FlashAttention-3 in fp8 at short sequences: the release's fp8 kernel, the what-ifs, the
    excess per CTA and the pre-release measurements."""
    return (
        "- **FlashAttention-3 in fp8 at short sequences.** The fp8 chart bars (Q, K, V "
        "already in e4m3 as FA-3's benchmark feeds them: `--fp8-quantize upstream`) are "
        "{}: optimistic by the most at N = 512. The model runs the first public fp8 "
        "forward, the one that transposes V inside the kernel as the paper's §3.3 describes "
        "([FA3-src], commit 5018ac6a, 19 days after the paper; the paper's own fp8 build is "
        "not public): its tiles (192 x 128 on 4 stages at d = 64, 128 x 256 at d = 128, "
        "128 x 128 at d = 256), its ping-pong rule (the warpgroups take turns at the tensor "
        "cores only at d >= 128) and its mainloop, which waits for each GEMM before the "
        "step's next work (`mma_fp8`: `wgmma` wait 0 after Q K^T and after P V), so no "
        "warpgroup overlaps any of its softmax with its own GEMMs, where the 16-bit release "
        "overlaps its row max and O's rescaling ([FA3-sass]; `flash3 --fp8-kernel release`, "
        "the default: one chain per CTA at d = 64, where the three warpgroups run in step, "
        "one per warpgroup at d >= 128). With the 16-bit mainloop instead (`--fp8-kernel "
        "pretransposed`, the pull request before it, [FA3-1075]: the 16-bit pipelining and "
        "ping-pong rule, priced with the 16-bit release's overlap as its SASS shows it, since "
        "the pull request as merged does not compile; V transposed before the kernel) the "
        "bars at N >= 4096 would be {} against {} as modelled. The d = 64 "
        "bars at N >= 4096 are {} with the barrier (`flash3 --pingpong on`), and the "
        "non-causal fp16 d = 256 bars, whose warpgroups the release also runs in step, {} "
        "at N >= 2048. At N = 512 the "
        "published fp8 forward is no faster than fp16, and "
        "slower at d = 64 and 128 (fp8 over fp16 throughput, non-causal: {}); the model's: "
        "{} (fp8 halves the bytes and doubles the tensor rate, every fixed cost the model "
        "charges is the same or smaller in fp8, and against that fp8's missing overlap, one "
        "chain a CTA at d = 64 where the 16-bit kernel's three warpgroups take turns, weighs "
        "the most at d = 64): above the published at every "
        "head dimension, so what is missing costs fp8 more than fp16 per CTA. Spread over "
        "the simulated grid, "
        "the published time beyond the predicted one at N = 512 and 1024 is {} ns per CTA "
        "(one CTA per SM: about {:.0f}–{:.0f} µs per CTA on each SM); at N = 512 about the "
        "same at every head dimension, although a d = 64 CTA does a quarter of a d = 256 "
        "CTA's MMAs: a cost per fp8 CTA, not per tile or per byte. At "
        "N = 512, d = 256 the published fp8 forward takes {:.0f} µs against fp16's {:.0f} µs; "
        "the model predicts {:.0f} µs and {:.0f} µs. What fp8 adds per CTA and the model does "
        "not "
        "price: the in-kernel transpose of each V tile ([FA3] §3.3: fp8 `wgmma` wants V "
        "K-major, done with LDSM/STSM through shared memory; the model counts its "
        "shared-memory reads and writes, not the warps' time issuing them or the barrier "
        "the consumers wait on before the P V GEMM), and a short CTA's "
        "prologue and epilogue (one CTA per SM, every wave: Q and the first K/V tile before "
        "any MMA, O through shared memory after the last) weigh twice as much against "
        "compute that fp8 halves. ncu on FA-3's fp8 kernel at N = 512 would say which "
        "binds. One measurement says the chart's short sequences may not be the kernel's: "
        "eight days after the paper, the first pull request of FA-3's fp8 forward (merged, "
        "then reverted for the release's in-kernel transpose) measured it on an H100 PCIe "
        "([FA3-1075], d = 128, non-causal, V transposed before timing; priced as its own "
        "program, `--fp8-kernel pretransposed`), where the model is "
        "off by a factor that hardly moves "
        "with the length ({}). There the shortest length reached {:.2f} of the longest's "
        "throughput (the model: {:.2f}); on the paper's H100 SXM5 chart, {:.2f} (the model: "
        "{:.2f}). A cost per fp8 CTA would weigh on the PCIe board's short sequences as "
        "well; it does not, so the chart's N = 512 bars may come from a build before that "
        "pull request, and the paper says as much of its own build ([FA3-fp8-note]): for "
        "its benchmarks the fp16 kernel is persistent, with load balancing, and the fp8 "
        "kernel is not, which 'partly explains' fp8's short and causal sequences, while the "
        "pull request's kernel is persistent. The model prices every CTA of either as "
        "starting cold (the release's persistent CTAs wait for their next Q and V all the "
        "same) and charges nothing for what only a grid of short-lived CTAs pays: each "
        "CTA's launch by the block scheduler, its setup (barriers, descriptors, register "
        "reallocation) and the drain of its O store before the SM takes the next one. "
        "Whether those account for the excess above needs a measurement of the "
        "non-persistent kernel. The level the PCIe points share is the h100-pcie model's own: its "
        "bf16 GEMM fraction is the 350 W board's ({:.2f}, [MAG-MAMF], against the SXM5's "
        "{:.2f}), its fp8 fraction ({:.2f}) that times the SXM5's fp8-to-bf16 ratio, as no fp8 "
        "GEMM was measured on a PCIe board, and its clock under load that of its peak; an fp8 "
        "GEMM and the clock measured on that board would replace them.".format(
                        fp8_chart_ranges_text(),
                        *fp8_kernel_what_if(4096),
                        fa3_pingpong_what_if("fp8 hd64", 4096),
                        fa3_pingpong_what_if("hd256", 2048),
                        ", ".join(f"d = {d} {r:.2f}"
                                  for d, r in fp8_over_fp16_published().items()),
                        ", ".join(f"d = {d} {r:.2f}"
                                  for d, r in fp8_over_fp16_model().items()),
                        "; ".join(f"d = {d}: " + ", ".join(f"{x:.0f}" for x in v)
                                  for d, v in fp8_excess_per_cta().items()),
                        min(min(v) for v in fp8_excess_per_cta().values())
                        * model_gpu("h100-sxm").sm_count / 1e3,
                        max(max(v) for v in fp8_excess_per_cta().values())
                        * model_gpu("h100-sxm").sm_count / 1e3,
                        fa3_short_fp8_vs_fp16()["fp8"][0], fa3_short_fp8_vs_fp16()["fp16"][0],
                        fa3_short_fp8_vs_fp16()["fp8"][1], fa3_short_fp8_vs_fp16()["fp16"][1],
                        fa3_1075_ratio_text(),
                        *fp8_length_dependence()["pcie"], *fp8_length_dependence()["sxm"],
                        model_gpu("h100-pcie").tensor_gemm_fraction,
                        model_gpu("h100-sxm").tensor_gemm_fraction,
                        model_gpu("h100-pcie").tensor_fp8_gemm_fraction))


def fa3_pipelining_bullet() -> str:
    """FlashAttention-3's pipelining as its release compiled it: the head dims it moved, d = 256
    now pessimistic, Table 2's gain not reproduced."""
    ranges = fa3_fp16_ranges()
    paper = fa3_fp16_ranges((("pipelining", "paper"),))
    return (
        "- **FlashAttention-3's intra-warpgroup pipelining, as its release compiled it.** The "
        "model prices what the release's SASS overlaps ([FA3-sass], table below: at d = 64 "
        "and 128 no exponential of a warpgroup runs beside its own GEMMs, only its row max "
        "and O's rescaling; `flash3 --pipelining release`, the default), not Section 3.2 as "
        "the paper draws it (two tiles in flight a warpgroup, each a chain of its own: "
        "`--pipelining paper`, the model before). The fp16 chart bars by head dimension: "
        + "; ".join(f"d = {d}: {lo:.2f}–{hi:.2f} (drawn as the paper does: "
                    f"{paper[d][0]:.2f}–{paper[d][1]:.2f})" for d, (lo, hi) in ranges.items())
        + ". d = 128, the head dimension of the paper's ablation and of most of the published "
        "figures, now lands on its measurements. d = 256 turned pessimistic: the release "
        "builds no ping-pong barrier there, so its two warpgroups run in step in the model, "
        "one chain a CTA with two fifths of its exps (none, causal) beside its GEMMs, while "
        "the published 76% of peak needs almost the whole softmax hidden behind MMAs running "
        "at the large GEMMs' rate: warpgroups that wait on no barrier of each other's may "
        "drift apart and hide each other's softmax, which the model does not credit without "
        "the barrier; ncu on the d = 256 kernel (tensor-pipe activity against the MUFU's) "
        "would say. FA-3's authors say as much of free-running warpgroups ('the warp "
        "schedulers do some of this overlapping for us, for free', [FA3-blog]) and put the "
        "barrier's gain at d = 128, N = 8K at about "
        f"{FA3_BLOG_TFLOPS['ping-pong'] / FA3_BLOG_TFLOPS['free-running']:.2f}x (around "
        f"{FA3_BLOG_TFLOPS['free-running']} to {FA3_BLOG_TFLOPS['ping-pong']} TFLOP/s, neither "
        "stage pipelined within a warpgroup); the model, whose warpgroups without it run in "
        f"step, puts it at {fa3_pingpong_gain()[0]:.2f}x ({fa3_blog_tflops('free-running')[0]:.0f} "
        f"to {fa3_blog_tflops('ping-pong')[0]:.0f}): every program it runs in step for want of "
        "a barrier (this one, the d = 256 release, the fp8 release at d = 64) it predicts too "
        "slow, and how much of the overlap the schedulers find unforced is a property of the "
        "hardware's arbitration that no published microbenchmark measures "
        "(`benchmarks/gpu_overlap.py` times it on a GPU). Table 2's pipelining gain is not reproduced: the model's release and its "
        "ablation (`--no-pipelining`: the whole softmax after the GEMMs) differ by "
        f"{fa3_pipelining_gain()[0]:.2f}x where Table 2 measured "
        f"{FA3_TABLE2_MS['no pipelining'] / FA3_TABLE2_MS['full']:.2f}x ([FA3-T2]); the "
        "ablation's kernel is not public, and what it lost beyond the row max and the "
        "rescaling is in no program the model can read. The ptxas matters: the placement "
        f"holds for the {sass_schedule()['source']['ptxas_release']} its maintainers "
        "recommended and pinned and, "
        "read the same way, for 12.4, 12.6, 12.8 and 13.0 at d = 64 and 128; 12.5's leaves "
        "the exponentials before the wait at d = 128.")


def fa3_d64_bullet() -> str:
    """FlashAttention-3 at d = 64: not the costs paid once per CTA; the overlap of softmax and
    GEMMs, against the chart's other Hopper kernels."""
    return (
        "- **FlashAttention-3 at d = 64.** The costs a CTA pays once — its prologue (Q and "
        "the first K/V tile at DRAM latency), the pipeline fill (one tile of each chain "
        "unhidden) and its epilogue (O normalized, converted and staged through shared "
        "memory for the TMA store, in turn, while the tensor cores idle) — are not what is "
        "missing: they take "
        + ", ".join(f"{fixed:.1%}" for _, _, fixed, _ in fa3_d64_fixed_shares())
        + " of the predicted time from N = 512 to 16384 (the epilogue "
        + ", ".join(f"{epi:.1%}" for _, _, _, epi in fa3_d64_fixed_shares())
        + "), while the d = 64 bars are off by a factor that does not fall with that share ("
        + ", ".join(f"{r:.2f} at N = {n}" for n, r, _, _ in fa3_d64_fixed_shares())
        + "; where the release's 192-row tiles overrun the sequence, it computes the rows "
        "past the end, which the model prices, `row_padding`: "
        + ", ".join(f"{row_padding(n, 192, WGMMA_ROWS):.3f}x the rows at N = {n}"
                    for n, _, _, _ in fa3_d64_fixed_shares()
                    if row_padding(n, 192, WGMMA_ROWS) > 1.01)
        + "). The simulated program is the release's: the planner "
        "splits the registers as the release does (`setmaxnreg`: 240 a consumer thread for two "
        "warpgroups, 160 for three) and takes the largest tile they hold, which at d = 64 is "
        "the release's 192 x 128 with three consumer warpgroups and P in registers "
        "([FA3-src], the commit of the paper's date), not the 128 x 176 with two warpgroups "
        "it planned at every head dimension before. A gap that scales with the tiles "
        "points at the softmax: at d = 64 a tile's exp, FMA and shared-memory work nearly "
        "equal its MMAs, and the model lets the three chains of a CTA (three warpgroups "
        "taking turns; no exp of a warpgroup runs beside its own GEMMs in the release's "
        "SASS at d = 64, [FA3-sass]) hide them behind each other, as the round-robin barrier "
        "intends; with no chain hiding another (`--no-overlap`) the d = 64 bars would be "
        + ", ".join(f"{r:.2f}" for r in fa3_d64_unoverlapped())
        + ": the published rates are close to what the pipes give when softmax and GEMMs do "
        "not overlap at all. The other Hopper kernels on the same chart stop near the same "
        "level: at 16k cuDNN reaches "
        + " and Triton ".join(f"{v[-1]} TFLOP/s ({v[-1] / peak_tflops('h100-sxm'):.0%} of "
                              "peak)" for v in FA3_D64_OTHER_KERNELS.values())
        + f" beside FA-3's {FA3_CHARTS[('hd64', 64, False, 'fp16')][16384][2]} "
        f"({FA3_CHARTS[('hd64', 64, False, 'fp16')][16384][2] / peak_tflops('h100-sxm'):.0%}). "
        "At d = 64 a score's exponential on the special-function units takes "
        f"{exp_over_mma_time(64):.2f}x the time of its 4 d MMA FLOPs at the tensor peak "
        f"({exp_over_mma_time(128):.2f}x at d = 128): a kernel that overlapped the two "
        "perfectly would approach the peak, one that overlapped nothing would reach half of "
        "it, and every kernel on the chart sits near half, which points at how far the "
        "hardware overlaps the tensor and special-function pipes at this ratio rather than "
        "at FA-3's program. The producer/consumer "
        "barrier hand-offs, the shuffles of a softmax run by one warp per SM sub-partition "
        "(its row max and sum cross the threads of a quad before the exponentials can start; "
        "the chain of its in-register reduction and the MMAs' latency are priced, "
        "`step_latency`, and hide behind the other chains), and "
        "a warpgroup's issue slots shared between its own `wgmma` and its softmax within a "
        "tile are not priced (the issue term counts the SM's instructions over the whole "
        "kernel, not a phase's), nor every instruction the compiled loop issues: "
        + "; ".join(f"d = {d}: {sass} a warp a K/V tile where the issue term counts "
                    f"{model:.0f}" for d, (model, sass) in fa3_issue_against_sass().items())
        + " (the rest: barriers, loop and address arithmetic, shuffles). At the compiled "
        "count the SM's four schedulers are busy {:.0%} of the time the tensor cores take "
        "for a tile at their dense peak, and the MUFU its exps {:.0%}: three pipes near "
        "saturation at once, which only a perfect overlap of all three would sustain. "
        "Today's release (2.8.4) runs d = 64 on 192 x 192 tiles ".format(
            fa3_pipe_loads_per_tile(64)["issue"], fa3_pipe_loads_per_tile(64)["mufu"])
        + "with P passed through shared memory, a different program. " + fa3_1777_sentence()
        + " A GPU session timing FA-3 at d = 64 "
        "with its per-kernel counters (ncu: tensor and MUFU pipe utilization) would say "
        "which of these binds.")


def fa3_1777_sentence() -> str:
    """A user's FA-3 at d = 64 on an H100 PCIe against the release's program on the h100-pcie
    model, with and without chains hiding each other."""
    full, none = fa3_1777_ratios(), fa3_1777_ratios(TimingOptions(overlap=False))
    same_tokens = [r[1] for r in full.values()]
    between = all(none[n][0] <= 1 <= full[n][0] for n in full)
    chart_between = all(lo <= 1 <= hi for lo, (_, hi, _, _) in
                        zip(fa3_d64_unoverlapped(), fa3_d64_fixed_shares()))
    return (
        "A user's measurements on another board show the same gap: FA-3 on an H100 PCIe, a "
        "2025 build whose d = 64 tiles are the later 192 x 192 ([FA3-1777]: B 16, H 32, "
        "d = 64, non-causal, "
        + ", ".join(f"{v} TFLOP/s at N = {n}" for n, v in FA3_1777_TFLOPS.items())
        + "), against the release's program predicted for the h100-pcie model: "
        + ", ".join(f"{r[0]:.2f}" for r in full.values())
        + f" ({min(same_tokens):.2f}–{max(same_tokens):.2f} with the batch shrinking as N "
        "grows, which the thread does not state), and with no chain hiding another "
        + ", ".join(f"{r[0]:.2f}" for r in none.values())
        + (": the measured rates lie between the two" if between else "")
        + (", as the SXM5 chart's do." if between and chart_between else "."))


def fa2_a100_low_end_bullet() -> str:
    """The low end of FA-2's A100 forward range: the sweep's slowest point, with and without
    resident CTAs in step."""
    chart = [(v / peak_tflops("a100-80gb") * 100, d, causal, SEQS[i])
             for (gpu, d, causal), bars in FA2_FWD_BWD_CHARTS.items() if gpu == "a100-80gb"
             for i, v in enumerate(bars["flash2"])]
    low, high = min(chart), max(chart)
    return (
        "- **The low end of FA-2's A100 forward range.** The abstract's 50-73% ([FA2]) "
        "names neither a pass nor a configuration, and it bounds no sweep: the paper's own "
        "forward + backward bars run from {:.0f}% of peak (d = {}, {}, N = {}) to {:.0f}% "
        "(d = {}, {}, N = {}) ([FA2-fig]).".format(
            low[0], low[1], "causal" if low[2] else "non-causal", low[3],
            high[0], high[1], "causal" if high[2] else "non-causal", high[3])
        + " The sweep's slowest forward in the "
        "model is {:.0f}% of peak at d = {}, N = {}{}, a short grid of two resident CTAs per "
        "SM whose every generation waits for its first tiles (CTAs in step, "
        "`lockstep_ctas`); with resident CTAs out of step (`--no-lockstep-ctas`, which also "
        "lets them hide each other's softmax) it is {:.0f}%. FA-2's published per-length "
        "A100 bars would settle which.".format(
            *fa2_a100_lowest()[:3], ", causal" if fa2_a100_lowest()[3] else "",
            fa2_a100_lowest(TimingOptions(lockstep_ctas=False))[0])
        + " The measured A100 points do not reach that end: a 2026 log of the "
        "forward at d = 128 ([FA2-A100-LOG]: {} points, N_q 1024 or 4096, N_k 1024 or 4096, "
        "32 query heads over 32 or 8 K/V heads) lands at {:.2f}–{:.2f} non-causal and "
        "{:.2f}–{:.2f} causal, and PyTorch's copy of the kernel at d = 64 and 128, N = 4096 "
        "and 8192, batch 1 ([PT-SDPA-A100]) at {:.2f}–{:.2f}: the model's forward holds "
        "where it was measured.".format(len(FA2_A100_LOG_MS), *_range(fa2_a100_log_ratios(False)),
                                        *_range(fa2_a100_log_ratios(True)),
                                        *_range(pt_sdpa_a100_ratios())))


def pt_sdpa_h100_sentence() -> str:
    """PyTorch's FA-2 measured by its maintainer on an H100, beside flash-attn's own."""
    own_off = _range(benchmark_attn_fwd_ratios("flash2", False))
    own_on = _range(benchmark_attn_fwd_ratios("flash2", True))
    return ("A PyTorch maintainer's own SDPA benchmark with the FA-2 backend named, on an "
            "H100 it does not name further ([PT-SDPA-H100]: B 1, H 16, N 4096, d 128, fp16), "
            f"lands where the log does: {pt_sdpa_h100_ratios()[False]:.2f} non-causal, "
            f"{pt_sdpa_h100_ratios()[True]:.2f} causal; flash-attn's own FA-2 forward (B 2, "
            f"N 8192, d 128) on the WH-REF and FA3-1791 boards: {own_off[0]:.2f}–"
            f"{own_off[1]:.2f} non-causal, {own_on[0]:.2f}–{own_on[1]:.2f} causal. ")


def _range(values) -> tuple[float, float]:
    return min(values), max(values)


def flash1_bullet() -> str:
    """FlashAttention (v1) is predicted too fast: its release program, the mechanisms already
    priced and the first candidates for the rest."""
    return (
        "- **FlashAttention (v1) is predicted too fast, so FlashAttention-2's speedup over "
        "it too small.** The FA-2 paper measures FA-2 1.7-3.0x faster than FA-1 ([FA2-s4]); "
        "the model puts it at "
        + ", ".join(f"{lo:.2f}-{hi:.2f}x ({passes})"
                    for passes, (lo, hi) in fa2_over_fa1_by_pass().items())
        + " over the whole A100 sweep, with FA-1 simulated as the v1 release runs it: its "
        "tiles and traffic (`--tiles release`, [FA1-src], [FA1-tiles]: a block of 128 or 256 "
        "keys walked 16 query rows at a time by 4 warps in the forward and 8 in the "
        "backward that split the keys, 'split-K' in FA-2's §3.3, so each warp's fp32 "
        "partial P V (backward: dQ_i) and row statistics go through shared memory to be "
        "summed, `smem_exchange_bytes`; the forward's warps keep their K and V slices and P "
        "in registers) on its grid (`--grid release`, [FA1-grid]; with one CTA per head, "
        "the default grid, the speedup reaches "
        + f"{fa2_over_fa1_head_grid_max():.2f}x where few heads leave most SMs idle). "
        + fa1_pass_ranges_text()
        + " Its forward + backward chart bars land at {:.2f}–{:.2f} "
        "(A100) and {:.2f}–{:.2f} (H100), furthest at d = 64, and the backward, which the "
        "model prices as shared-memory-bound, takes most of the time. The model already "
        "prices the split-K exchange as a phase of the chain that follows the MMAs "
        "(`exchange_phase`: without it the bars are {:.2f}–{:.2f} and {:.2f}–{:.2f}), and "
        "the latency a 16-row step waits on its chain of instructions (`step_latency`: "
        "without it {:.2f}–{:.2f} and {:.2f}–{:.2f}): S's last MMA, the row max over a "
        "thread's values, the warps' maxima and partial outputs through shared memory, the "
        "exps, P V's last MMA, at the latencies Accel-Sim's tuner measured ([ACCEL-SIM]); a "
        "release step waits several times as long per FLOP as a FlashAttention-2 step, whose "
        "warps each hold whole rows. That chain includes the warp shuffles and barriers of "
        "the row max, the row sum and the exchange (6 shuffle rounds and 2 barriers a "
        "forward step, 2 barriers a backward step; FA-2: 2 and 2, its backward 3 barriers), "
        "at the latencies microbenchmarks of those instructions measured (a shuffle round "
        "29 clocks on an H200, [KW-SHFL]; a barrier 8.2 + 2.0 clocks a warp on an H100 SXM5, "
        "[AMORA-BAR]; on a GA100 board, in ns, 23.9 and 24.2, [GMB-GA100]: sources in "
        "`hwmodels/gpus.py`); free (`--no-sync-latency`, as the model had them before a "
        "source was found) the bars were {:.2f}–{:.2f} and {:.2f}–{:.2f}. The chain also "
        "waits on the global loads the release stages through registers inside a step "
        "(`step_loads`: the next Q_i and dO_i, loaded a few GEMMs before they are stored "
        "to shared memory, the forward's fp32 O_i, read back from the K/V block before "
        "once S is issued and needed after P V, and the loop kernel's fp32 dQ_i, read back "
        "after the dV GEMM and needed after dK, one GEMM later; [FA1-src]), for what of their "
        "L2 or DRAM "
        "latency the work between issue and use does not cover: little on the A100, "
        "whose mma.sync steps are long against its DRAM latency in clocks, more on the "
        "H100's loop kernel; free (`--no-staged-load-latency`) the bars were "
        "{:.2f}–{:.2f} and {:.2f}–{:.2f}. A load from DRAM waits the latency the kernel's "
        "own traffic raises it to, not a lone pointer chase's (`loaded_latency`: the chase's "
        "latency plus what a round of RRZE gpu-benches' stream sweep gains over its lightest "
        "load at the kernel's DRAM utilization, [STREAM-OCC]); at the unloaded latency the "
        "bars were {:.2f}–{:.2f} and {:.2f}–{:.2f}: the latency in ns does not shrink with "
        "the H100's faster steps. What the rest is needs a GPU: the registers "
        "the release's warps hold K and V in (64 KiB a CTA at d = 64) already limit it to "
        "two CTAs an SM on the H100 where shared memory alone would allow three, and "
        "`ncu` occupancy and stall reasons on the release's kernels would say what its "
        "warps wait on. "
        "The speedup is lowest at {} and highest at {} (FA-1 there at {:.0f}% of peak). The "
        "release's backward is simulated with its own traffic too: D stored once, dQ "
        "accumulated in fp32, and where it splits over K/V blocks FA-2's three kernels (D "
        "with the buffer cleared, fp32 dQ atomics at the L2 atomic rate, the conversion), and "
        "its warps' operands where its kernel keeps them: each warp's own dS for dQ_i in "
        "registers, V_j for dP too only on keys <= 128 at d <= 64 (`V_IN_REGS`; "
        "[FA1-tiles]; on longer keys the A100 and, from the release's H100 support on, the "
        "H100 keep V_j in shared memory, [FA1-H100]), K_j reloaded from shared memory at "
        "every step (the backward builds S = Q_i K_jᵀ with K out of registers whatever its "
        "traits' `K_IN_REGS` says, [FA1-src]), the rest read from shared "
        "memory by every warp that needs it (Q_i and dO_i by all 8 warps for four of the "
        "five GEMMs). Most of these faithful steps made FA-1's backward faster in the model; "
        "V_j and K_j read from shared memory make it slower. ".format(
            *fa2_chart_range("a100-80gb", "flash1"), *fa2_chart_range("h100-sxm", "flash1"),
            *fa1_chart_range("a100-80gb", TimingOptions(exchange_phase=False)),
            *fa1_chart_range("h100-sxm", TimingOptions(exchange_phase=False)),
            *fa1_chart_range("a100-80gb", TimingOptions(step_latency=False)),
            *fa1_chart_range("h100-sxm", TimingOptions(step_latency=False)),
            *fa1_chart_range("a100-80gb", TimingOptions(sync_latency=False)),
            *fa1_chart_range("h100-sxm", TimingOptions(sync_latency=False)),
            *fa1_chart_range("a100-80gb", TimingOptions(staged_load_latency=False)),
            *fa1_chart_range("h100-sxm", TimingOptions(staged_load_latency=False)),
            *fa1_chart_range("a100-80gb", TimingOptions(loaded_latency=False)),
            *fa1_chart_range("h100-sxm", TimingOptions(loaded_latency=False)),
            *(f"{passes}, d = {d}, {'causal' if causal else 'non-causal'}, N = {n}: {r:.2f}x"
              for r, passes, d, causal, n, _ in fa2_over_fa1_extremes()),
            fa2_over_fa1_extremes()[1][5])
        + flash1_paper_tables_text())


def fa1_pass_ranges_text() -> str:
    """FA-1's forward and backward % of peak against the FA-2 paper's introduction, and why
    that introduction's ranges cannot all hold at their ends."""
    fwd_lo, fwd_hi = fa1_a100_range("fwd")
    fa2_best = 73           # [FA2-intro]: FA-2's forward "up to 73%"
    return (
        "FA-1's forward lands at {}, its backward at {} of the ranges the FA-2 paper's "
        "introduction gives them ({}-{}% and {}-{}% of peak, [FA2-intro]): the model's "
        "forward ({:.0f}-{:.0f}% of peak over the sweep) too slow at both ends, its backward "
        "too fast at the top. The introduction's forward range does not square with the "
        "paper's speedup: with FA-2's forward at most {}% of peak (the same paragraph), an "
        "FA-1 forward at {}% would leave FA-2 at most {:.2f}x faster, where §4 measures "
        "1.7-3.0x ([FA2-s4]), and the abstract puts FA-1 at 25-40% without naming a pass "
        "([FA2]); the per-length forward bars (its Fig. 5) would settle which, and no "
        "first-hand reading of them is at hand.".format(
            "–".join(f"{r:.2f}" for r in fa1_pass_ratios("fwd")),
            "–".join(f"{r:.2f}" for r in fa1_pass_ratios("bwd")),
            *FA1_FWD_PUBLISHED, *FA1_BWD_PUBLISHED, fwd_lo, fwd_hi, fa2_best,
            FA1_FWD_PUBLISHED[1], fa2_best / FA1_FWD_PUBLISHED[1]))


def flash1_paper_tables_text() -> str:
    """The FlashAttention paper's own runtimes of its first release, forward and backward
    apart, and what its dropout tables validate."""
    ratios = fa1_tables_time_ratios()

    def span(passes):
        r = ratios[passes]
        return f"{min(r.values()):.2f}–{max(r.values()):.2f}"

    furthest = {max(r, key=r.get) for r in ratios.values()}
    where = (f"both furthest at N = {furthest.pop()}" if len(furthest) == 1 else
             "furthest at N = " + " and ".join(str(max(ratios[p], key=ratios[p].get))
                                               for p in ("fwd", "bwd")))
    return (
        "The FlashAttention paper's own runtimes of its first release time the forward and "
        "the backward apart ([FA1-tables]: A100 40GB, B 16, H 8, d = 64, N 1024-65536): "
        "with the release's tiles on that release's grid, one CTA per head ([FA1-first]; "
        f"`flash1 --grid head --tiles release`), the model puts the forward at {span('fwd')} "
        f"of the measured throughput and the backward at {span('bwd')} ({where}): the "
        "backward carries the excess. That release's backward also held V_j in registers at 256 keys (its "
        "kernel traits without flag 0x100), which `--tiles release` does not run and which "
        "would make the model's backward faster still, so these are not compared points. "
        "The same tables' dropout runs are: the throughput with dropout 0.1 over without "
        "(the primary table), a ratio of two runs of one program that only the release's "
        "random numbers tell apart: one Philox call for eight elements, compared 16 bits at "
        "a time ([FA1-first]), where FlashAttention-2 decides sixteen from a call.")


def sibling_board_constants_bullet() -> str:
    """Constants measured on sibling boards, and what a GPU session should measure instead."""
    return (
        "- **Constants measured on sibling boards.** The DRAM latency comes from pointer "
        "chasing on an A100 PCIe and an H800 PCIe (LUO-LAT), the copy bandwidth of the H200 "
        "from a GH200 (STREAM; the H100 SXM5's is its own, QUACK), the H100 SXM5's L2 "
        "bandwidth from a GH200 (L2-RRZE: the same GH100 L2), the H100 SXM5's and the "
        "H200's DRAM round trip under load from a GH200's occupancy sweep (STREAM-OCC: "
        "the same 132 SMs, HBM3 at 4 TB/s, where the SXM5 has 3.35), the `mma.sync` ratio from "
        "an H800 PCIe "
        "(LUO-MMA), the shuffle latency from an H200 (KW-SHFL), the A100's shuffle and "
        "barrier latencies from a GA100 mining board timed in ns (GMB-GA100), "
        "and the H100's sustained clock under tensor load is still the clock of "
        "its peak (see the constants table). `attnsim gpu-check` prints the clock and HBM "
        "bandwidth the model uses beside the device's; a GPU session should measure them on "
        "the A100/H100 SXM themselves (`bash benchmarks/gpu_session.sh quick`; "
        "`gpu_microbench.py` measures the L2 read bandwidth too).")


def h200_bullet() -> str:
    """The one H200 figure: how its time compares with the same user's H100, measured and
    modelled."""
    measured, predicted = fa_1438_h200_over_h100()
    h100, h200 = source_ratios("FA-1438")
    return (
        "- **The H200.** Its one published figure is a user's FA-3 forward timed on an H100 "
        "and an H200 with the same build ([FA-1438]: bf16, d = 64, N = 32768): the model "
        f"is at {h100:.2f} of the H100's throughput and {h200:.2f} of the H200's. The "
        f"H200 took {measured:.3f}x the H100's time; the model {predicted:.3f}x. It gives "
        "the H200 the H100 SXM5's SMs, sustained clock and bf16 GEMM rate ([MAMF] gives it "
        "the H100's bf16 figure: 'H200 is the same'), and this forward is bound by its SMs, "
        "not by "
        "the HBM the H200 has more of. A lower sustained clock under tensor load on the "
        "H200 board would make it slower, and no microbenchmark of that clock was found; "
        "one pair of boards does not tell it from the spread between boards of one model "
        "(below). `gpu_microbench.py` on an H200 measures the clock and the GEMM rate.")


def achievable_gemm_bullet() -> str:
    """Which large GEMM is achievable: how the WH-REF points move with the GEMM rate taken."""
    return (
        "- **Which large GEMM is achievable.** The H100 SXM5's tensor rates are MAMF's "
        f"sweep maxima (bf16 {wh_ref_gemm_sensitivity()['fractions'][0]:.3f}, fp8 "
        f"{wh_ref_gemm_sensitivity()['fractions'][2]:.3f} of the dense peak). On the board "
        "that measured the WH-REF points, large GEMMs ran faster: DeepGEMM's tests reached "
        f"{WH_REF_GEMM_TFLOPS['bf16']:.0f} TFLOP/s in bf16 "
        f"({wh_ref_gemm_sensitivity()['fractions'][1]:.3f}, with cuBLAS as fast on the same "
        f"shape) and {WH_REF_GEMM_TFLOPS['fp8']:.0f} in fp8 "
        f"({wh_ref_gemm_sensitivity()['fractions'][3]:.3f}, 1.07x cuBLAS), while the same "
        "board's square 8192 cuBLAS GEMM reached "
        f"{WH_REF_GEMM_TFLOPS['fp16 cuBLAS 8192'] / peak_tflops('h100-sxm'):.3f} (TC-BENCH), "
        "and a second MAMF search found "
        f"{MAG_MAMF_TFLOPS['h100-sxm'] / peak_tflops('h100-sxm'):.3f} on an H100 SXM5 and "
        f"{MAG_MAMF_TFLOPS['a100-80gb'] / peak_tflops('a100-80gb'):.3f} on an A100 SXM "
        f"(MAG-MAMF; MAMF: {model_gpu('a100-80gb').tensor_gemm_fraction:.3f}). "
        "Boards, drivers and "
        "library versions move the achievable GEMM rate by several percent, and the model's "
        "tensor-bound predictions with it: with the board's own bf16 fraction the WH-REF "
        "FA-3 points (non-causal, causal) would be "
        + ", ".join(f"{r:.2f}" for r in wh_ref_gemm_sensitivity()["board"])
        + " instead of "
        + ", ".join(f"{r:.2f}" for r in wh_ref_gemm_sensitivity()["model"])
        + ". The same benchmark on another board ([FA3-1791], unnamed, in July 2025) took "
        + board_spread_text()
        + ". The model keeps one sweep's maxima for every point of a GPU rather than a board's "
        "own figure for the points measured on that board; `gpu_microbench.py` measures the "
        "fraction on the GPU at hand, and a GPU TOML sets it.")


def board_spread_text() -> str:
    """The two benchmark_attn.py logs side by side: how much longer FA3-1791's board took than
    WH-REF's, kernel by kernel, and the model's ratio against each."""
    names = {"flash2": "FA-2", "flash3": "FA-3"}
    both = [(f"{names[algorithm]} {passes}{' causal' if causal else ''}", ratio)
            for (algorithm, passes, causal), ratio in board_time_ratios().items()]
    parts = [f"{kernel} {ratio:.2f}x" for kernel, ratio in both]
    wh = benchmark_attn_ratios("flash3", "h100-sxm")
    other = benchmark_attn_ratios("flash3", "h100-sxm", log="FA3-1791")
    longer = "longer than" if all(r > 1 for _, r in both) else "relative to"
    return (f"{longer} WH-REF's time for every kernel both logs ran (" + ", ".join(parts)
            + "); the model, one figure for both boards, puts FA-3's forward (non-causal, "
            "causal) at "
            + ", ".join(f"{r:.2f}" for r in wh) + " of WH-REF's and "
            + ", ".join(f"{r:.2f}" for r in other) + " of FA3-1791's")


def fa3_overlap_paragraph() -> str:
    """What FlashAttention-3's bars say of its overlap: every bar under the overlap switches
    (the table follows it), and why the model does not adopt the setting they fit."""
    return (
        "Every FlashAttention-3 chart bar, predicted/published, as the model prices it and "
        "with switches off: no GEMM-softmax chain hiding another (`--no-overlap`: "
        "each tile's GEMMs, then its softmax, and the steps' instruction latencies unhidden), "
        "and that as the pipes alone would have it: the datasheet's rates instead of the "
        "microbenchmarks' (`--no-achievable-rates`) and no instruction latency "
        "(`--no-step-latency`). At N ≥ {short} the bars are "
        "{m[0]:.2f}–{m[1]:.2f} as modelled, {o[0]:.2f}–{o[1]:.2f} with no overlap, and "
        "{p[0]:.2f}–{p[1]:.2f} (fp16 {p16[0]:.2f}–{p16[1]:.2f}) with the pipes alone taking "
        "turns at the datasheet rates: in fp16, across d = 64, 128 and 256, causal and not, "
        "the published "
        "long-sequence rates are those of a kernel whose exponentials and MMAs take turns on "
        "each SM, with the tensor cores at their full dense rate at the clock the paper fixes "
        "([FA3-clock]); the fp8 bars scatter more. The model does not adopt that setting: "
        "it prices the overlap the release's compiled program leaves (the ping-pong between "
        "warpgroups, and of a warpgroup's own softmax only what its SASS issues before "
        "waiting for its GEMMs, below), the best large GEMMs measured on H100s stay below "
        "the datasheet rate, and FlashAttention-2's points, priced with the same rates, are "
        "already optimistic; fitting one switch setting to these bars would be the fudge the "
        "model avoids. It is the measurement to make first on a GPU: FlashAttention-3 at d = 64 and "
        "128 under Nsight Compute, whether the tensor pipe's and the MUFU's active cycles "
        "add up to the kernel's or overlap, next to a large GEMM's rate at the same locked "
        "clock. The rule itself can be timed apart from any attention kernel: "
        "`benchmarks/gpu_overlap.py` runs warpgroups that alternate `wgmma` and `ex2` "
        "phases, each reading the other's result, alone, in step, in ping-pong, free of any "
        "barrier between them (as the release's consumers run where it builds no ping-pong "
        "barrier) and with the "
        "P V GEMM left running under the exps (Section 3.2's pipelining as the paper draws "
        "it, which the release's compiled code does not do at d <= 128), and "
        "prints how far the phases hide each other beside what the model's mean-value "
        "analysis gives for the same phases (part of `gpu_session.sh quick`).".format(short=FA3_SHORT, m=fa3_switch_range("model"),
                         o=fa3_switch_range("--no-overlap"),
                         p=fa3_switch_range(PIPES_ALONE),
                         p16=fa3_switch_range(PIPES_ALONE, dtype="fp16")))


def fa3_sass_paragraph() -> str:
    """What the release's compiled forward overlaps, as ``benchmarks/sass_schedule.py`` read
    it (the table follows it)."""
    source = sass_schedule()["source"]
    return (
        "What a warpgroup of the release runs beside its own GEMMs, read off the compiled "
        f"kernel ([FA3-sass]): FlashAttention-3 at {source['flash_attention_commit'][:8]} "
        f"(CUTLASS {source['cutlass_commit'][:8]}) assembled by ptxas "
        f"{source['ptxas_release']}, the CUDA its maintainers recommended for it and later "
        "pinned, and disassembled; in "
        "each kernel's steady-state loop, a consumer thread's softmax instructions on each "
        "pipe before its wait for every `wgmma` in flight (`WARPGROUP.DEPBAR.LE gsb0, 0x0`: "
        "the next Q K^T and this step's P V, issued together) and from it on. The source "
        "waits for P V after the softmax (`warpgroup_wait<0>()` after `online_softmax`); "
        "ptxas places the wait before the exponentials, so what runs beside the GEMMs is "
        "the row max (in part) and O's rescaling, at d = 256 also two fifths of the exps "
        "(non-causal) and at d = 128 causal a third. The model takes each pipe's share "
        "before the wait as the share of its softmax work that runs beside the chain's own "
        "GEMMs (`softmax_beside_own_gemm`, `--no-own-gemm-overlap` to drop it) and keeps "
        "one chain a warpgroup. `python benchmarks/sass_schedule.py --flash-attention REPO "
        "--cutlass REPO --ptxas PTXAS --cuobjdump CUOBJDUMP --json "
        "reports/fa3_sass_schedule.json` rebuilds the table (no GPU; pip's "
        "nvidia-cuda-nvcc-cu12==12.3.107 has the ptxas, nvidia-cuda-cuobjdump the "
        "disassembler).")
