"""docs/validation.md: the page, one function per section, each returning its text.

A section is a heading and blocks (paragraphs, lists, tables) with a blank line between each
two (``blocks``); ``document`` joins the sections the same way. Every number in the prose is
computed by the package's other modules; the long prose of "Where the model is still off" is
in ``gaps``.
"""
from __future__ import annotations

from .charts import (CHART_OPTIONS, PAPER_TILES_ON_RELEASE_GRID, backward_chart_range,
                     backward_chart_table, chart_table, fa1_chart_range, fa2_chart_range,
                     fa2_chart_table)
from .diagnostics import eager_peak_gb_at_16k, fa1_head_grid_collapse, flash1_tiles
from .fa3_diagnostics import (chart_speedup_text, fa3_switch_table, sass_backward_exps_text,
                              sass_backward_table, sass_schedule_table)
from .figures import FA3_1075_OPTIONS, FLASH1_RELEASE, FP8_BENCHMARK_OPTIONS, comparison_table
from . import flash_decoding, flashmla
from .gaps import (achievable_gemm_bullet, fa2_a100_low_end_bullet, fa2_on_h100_bullet,
                   fa3_d64_bullet, fa3_fp8_bullet, fa3_overlap_paragraph, fa3_pipelining_bullet,
                   fa3_sass_paragraph, flash1_bullet, h200_bullet, sibling_board_constants_bullet,
                   standard_attention_bullet)
from .model_tables import ablation_table, breakdown_table, constants_table
from .predictions import MEASURED, PUBLISHED_PROGRAM
from .scorecard import (all_ratios, fa3_utilization_target_text, groups_table, outside_table,
                        targets_table)
from .sources import sources_text
from .switches import switch_table, switches_text
from .targets import DOCUMENTED_BAND


def blocks(*parts: str) -> str:
    """Headings, paragraphs, lists and tables, a blank line between each two."""
    return "\n\n".join(parts)


def measured_note() -> list[str]:
    """The paragraph that says which points a measured GPU file predicts (none by default)."""
    if not MEASURED:
        return []
    lines = ["", "**Predicted with measured constants.** "
             + " ".join(f"Every {name} point below is predicted with the GPU file "
                        f"`{gpu.name}` ({gpu.full_name}; sources: {gpu.sources or 'not stated'}) "
                        f"instead of the built-in model; its constants appear in the constants "
                        "table, whose 'set by' column still names the built-in model's sources."
                        for name, gpu in MEASURED.items())
             + " Peaks (the '% of peak' figures) stay the datasheet's. This is not "
             "docs/validation.md, which is the built-in model's page."]
    return lines


def options_text(options: tuple) -> str:
    """'--name value ...' of (name, value) option pairs, as the CLI spells them."""
    return " ".join(f"--{name.replace('_', '-')} {value}" for name, value in options)


def programs_text() -> str:
    """Which options every group of published figures is predicted with."""
    return "; ".join([
        f"every FlashAttention-2 figure `flash2 {options_text(PUBLISHED_PROGRAM['flash2'])}` "
        "(the release's tiles and warps, [FA2-src])",
        f"the FA-2 paper's FlashAttention bars `flash1 {options_text(FLASH1_RELEASE)}` "
        "([FA1-grid], [FA1-tiles], [FA1-src]; on the H100 [FA1-H100])",
        f"the FA-3 paper's standard-attention bars `standard "
        f"{options_text(CHART_OPTIONS['standard'])}` ([FA-eager])",
        f"its fp8 bars `flash3 {options_text(FP8_BENCHMARK_OPTIONS)}` on the first public fp8 "
        "forward (`--fp8-kernel release`, the default, [FA3-src])",
        f"the pre-release fp8 measurements `flash3 {options_text(FA3_1075_OPTIONS)}` "
        "([FA3-1075]); and every FlashAttention-3 figure on what the release's compiled "
        "kernel overlaps (`flash3 --pipelining release`, the default, [FA3-sass]); FlashMLA's "
        "figures `mla --path absorbed`, its latent attention kernels alone ([FMLA])"])


def intro_section() -> str:
    """The title, what the page is, the command that writes it, and (with ``--measured``)
    which points a measured GPU file predicts."""
    command = "\n".join([
        "```bash",
        "python benchmarks/validate_published.py --output docs/validation.md \\",
        "    --summary reports/validation_summary.json --readme README.md",
        "```"])
    page = blocks(
        "# Validation against published figures",
        "attnsim's timing model predicts A100/H100 attention runtimes from counted traffic and "
        "FLOPs, priced by mechanisms whose constants come from microbenchmarks (large GEMMs, "
        "copies, latencies, clocks; `hwmodels/gpus.py`). This page compares the predictions "
        "with numbers published for the same workloads: the FlashAttention papers, their "
        "maintainers and third-party benchmark logs. Published attention figures only "
        "validate: no constant is set from them. The whole page is written by",
        command,
        "(count-only simulations; nothing below is hand-written except the prose, and the prose "
        "quotes no number the script did not compute). `tests/test_published.py` asserts every "
        f"ratio on this page inside the documented band {DOCUMENTED_BAND[0]:.2f}–"
        f"{DOCUMENTED_BAND[1]:.2f}, so a change of the model that moves a point outside it fails. "
        "The summary file holds the same points' ranges by GPU, algorithm and input type, which "
        "`attnsim report` quotes under *How far to trust the predicted times*.")
    return "\n".join([page] + measured_note())   # the note: a blank line and its paragraph


def targets_section(fmt: str) -> str:
    """The section "Targets": the targets table, the range over every point, the ratios
    by group."""
    ratios = [r for _, r in all_ratios()]
    lo, hi = min(ratios), max(ratios)
    return blocks(
        "## Targets",
        targets_table(fmt),
        f"Over all {len(ratios)} points the predicted/published ratio lies in "
        f"{lo:.2f}–{hi:.2f}. Where a target is not met, the points responsible and the "
        "mechanism the model still lacks are listed under *Where the model is still off*. "
        + fa3_utilization_target_text() + " " + chart_speedup_text() + " By group:",
        groups_table(fmt))


def primary_figures_section(fmt: str) -> str:
    """The section "Predicted vs published (primary figures)"."""
    return blocks(
        "## Predicted vs published (primary figures)",
        "pred/pub > 1: the model is optimistic. Ranges compare the predicted minimum and "
        "maximum over the papers' sweep with the published range's ends.",
        comparison_table(fmt))


def fa3_forward_charts_section(fmt: str) -> str:
    """The section on the FlashAttention-3 paper's forward charts: how they were read,
    and their bars."""
    return blocks(
        "## The FlashAttention-3 paper's forward charts (secondary)",
        "TFLOP/s, published / predicted (ratio), H100 SXM5, fp16 (the charts named fp8: "
        "FlashAttention-3 in e4m3, on Q, K, V already in e4m3 as FA-3's benchmark feeds them, "
        "`flash3 --fp8-quantize upstream`). The 16-bit values are read off the bars' labels "
        "in the flash-attention repository's image of those charts, whose captions say which "
        "is causal: chart A is '(c) Forward, without causal mask, head dim 128', chart B "
        "'(d) ... with causal mask', and likewise hd64 and hd256 ([FA3-fig] below; one label, "
        "d = 256 non-causal FA-3 at 1k, sits under the legend and comes from a transcription "
        "of the paper's image). The fp8 values come from machine transcriptions of the "
        "paper's images, which do not say which chart is causal: of the two fp8 charts at a "
        "head dimension, the one whose FA-3 bar at N = 512 is lower is read as causal (B). "
        "A dash: no bar (standard attention is out of memory at 16k and absent from the "
        "d = 256 charts). " + eager_oom_text() + " The standard-attention bars time PyTorch "
        "eager code "
        "(flash-attention's benchmark `attention_pytorch`, [FA-eager]), so they are predicted "
        "with that program, `standard --program pytorch-eager`, not with Algorithm 0.",
        chart_table(fmt))


def eager_oom_text() -> str:
    """What the charts' 'OOM' at 16k is and is not, against the simulated footprint."""
    peak = eager_peak_gb_at_16k()
    return ("The charts' 'OOM' is the benchmarks' label for any exception the eager program "
            "raised (`except: # Skip if OOM`, [FA-eager]); the simulated program at 16k, "
            f"forward and backward, peaks at {peak[128]:.1f} GB (d = 128) and {peak[64]:.1f} GB "
            "(d = 64), within the 80 GB boards, so the failure there need not be memory (S "
            "then holds 2^32 or 2^33 elements); the papers do not say which it was.")


def fa3_backward_charts_section(fmt: str) -> str:
    """The section on the FlashAttention-3 paper's backward charts: standard attention's,
    FlashAttention-2's and FlashAttention-3's bars."""
    eager_lo, eager_hi = backward_chart_range("standard")
    return blocks(
        "## The FlashAttention-3 paper's backward charts (secondary)",
        "Standard attention's, FlashAttention-2's and FlashAttention-3's backward on the "
        "H100 SXM5, non-causal, "
        "fp16, TFLOP/s at 2.5x the forward's FLOPs ([FA3-bwd-fig]: machine transcriptions of "
        "the chart images; two transcriptions of each chart agree). FlashAttention-3's bars "
        "are predicted with the release's backward (`flash3 --pass bwd`, [FA3-src]: its "
        "128 x 128 tiles at d = 64 and 64 x 128 at d = 128, two consumer warpgroups that "
        "meet at a barrier every step, one chain a CTA, on `wgmma`; what of the softmax runs "
        "beside its own dP GEMM read off its SASS as the forward's is, [FA3-sass]: "
        f"{sass_backward_exps_text()}, `flash3.backward.RELEASE_SOFTMAX_SPLIT`, table below), "
        "FlashAttention-2's with "
        "its release's (`flash2 --tiles release`), standard attention's, which time "
        "autograd through the benchmark's eager program ([FA-eager]), with that program's "
        "backward (`standard --program pytorch-eager --pass bwd`: "
        f"{eager_lo:.2f}–{eager_hi:.2f}, see *Where the model is still off*). cuDNN's bars "
        "are not predicted: its backward is not simulated.",
        backward_chart_table(fmt),
        "The release's backward as ptxas 12.3 compiled it (`benchmarks/sass_schedule.py`, "
        "`reports/fa3_sass_schedule.json`): a consumer thread's softmax instructions in the "
        "loop that issues all five GEMMs, between its wait for S and its wait for dP (beside "
        "the dP GEMM) and elsewhere in the loop.",
        sass_backward_table(fmt))


def fa2_charts_section(fmt: str) -> str:
    """The section on the FlashAttention-2 paper's forward + backward charts: FlashAttention
    (v1) as its release runs it, and both algorithms' bars."""
    return blocks(
        "## The FlashAttention-2 paper's forward + backward charts (secondary)",
        "PyTorch's eager attention, FlashAttention (v1) and FlashAttention-2, forward + "
        "backward, fp16, TFLOP/s at 3.5x "
        "the forward's FLOPs, the papers' sweep, on the A100 80GB SXM4 (Fig. 4) and the H100 "
        "80GB SXM5 (Fig. 7, the same sm80 code) ([FA2-fig]). The PyTorch bars time the "
        "benchmark's eager program, its forward and its autograd backward ([FA-eager]), and "
        "are predicted with both (`standard --program pytorch-eager --pass fwd+bwd`: "
        "{:.2f}–{:.2f} on the A100, {:.2f}–{:.2f} on the H100, see *Where the model is still "
        "off*); xformers and the Triton kernel are not simulated. FlashAttention is "
        "simulated as the v1 release "
        "the paper measured runs it: on its tiles, with its traffic (`flash1 --tiles "
        "release`, [FA1-src], [FA1-tiles]: a block of 128 keys, or 256 at d <= 64, held in "
        "the warps' registers and walked 16 query rows at a time, an fp32 output and a "
        "log-sum-exp written and read back between K/V blocks), and on its grid (`--grid "
        "release`, [FA1-grid]): its "
        "forward deals each head's Q blocks to as many CTAs as fill the SMs' waves, its "
        "backward gives each K/V block a CTA, so it does not collapse where batch x heads "
        "falls below the SM count (16 heads at N = 16k, d = 128); with one CTA per head "
        "(the default grid) the same A100 bars would fall to {:.2f} of the published at "
        "that point. FA-2 lands at {:.2f}–{:.2f} on the A100 and {:.2f}–{:.2f} on the H100; "
        "FlashAttention at {:.2f}–{:.2f} on the A100 and {:.2f}–{:.2f} on the H100. With "
        "the paper's Algorithm 1 and 4 instead (`--tiles paper`, the default: tiles "
        "planned from the GPU's shared memory, on the H100's 227 KiB forward {} and "
        "backward {} at d = 128, on the A100's 163 KiB {} and {}; O_i, ℓ_i, m_i at e "
        "bytes) the same bars would be {:.2f}–{:.2f} on the A100 and {:.2f}–{:.2f} on the "
        "H100: the A100's closer agreement there came from shared-memory traffic the "
        "release does not make (K_j and V_j read per 16 rows where its warps keep them in "
        "registers) standing in for what the model still lacks (*Where the model is still "
        "off*).".format(
            *fa2_chart_range("a100-80gb", "standard"), *fa2_chart_range("h100-sxm", "standard"),
            fa1_head_grid_collapse(), *fa2_chart_range("a100-80gb", "flash2"),
            *fa2_chart_range("h100-sxm", "flash2"), *fa2_chart_range("a100-80gb", "flash1"),
            *fa2_chart_range("h100-sxm", "flash1"),
            *(f"{q} x {k}" for q, k in flash1_tiles("h100-sxm", 128)),
            *(f"{q} x {k}" for q, k in flash1_tiles("a100-80gb", 128)),
            *fa1_chart_range("a100-80gb", options=PAPER_TILES_ON_RELEASE_GRID),
            *fa1_chart_range("h100-sxm", options=PAPER_TILES_ON_RELEASE_GRID)),
        fa2_chart_table(fmt))


def switches_section(fmt: str) -> str:
    """The section on predicted speedups: one kernel or input type over another, bar by
    bar."""
    return blocks(
        "## Predicted speedups: one kernel or input type over another",
        switches_text(),
        switch_table(fmt))


def still_off_section(fmt: str) -> str:
    """The section "Where the model is still off": the points outside the band, one bullet
    per gap the model still has (``gaps``), then FlashAttention-3's overlap."""
    bullets = [fa2_on_h100_bullet(), standard_attention_bullet(), fa3_fp8_bullet(),
               fa3_pipelining_bullet(), fa3_d64_bullet(), fa2_a100_low_end_bullet(),
               flash1_bullet(), flash_decoding.split_kv_bullet(),
               sibling_board_constants_bullet(), h200_bullet(), achievable_gemm_bullet()]
    return blocks(
        "## Where the model is still off",
        outside_table(fmt),
        "What the remaining gaps point at (mechanisms the model does not have yet):",
        "\n".join(bullets),
        fa3_overlap_subsection(fmt))


def fa3_overlap_subsection(fmt: str) -> str:
    """The subsection on what FlashAttention-3's bars say of its overlap: every bar under the
    overlap switches."""
    return blocks(
        "### What FlashAttention-3's bars say of its overlap",
        fa3_overlap_paragraph(),
        fa3_switch_table(fmt),
        fa3_sass_paragraph(),
        sass_schedule_table(fmt))


def constants_section(fmt: str) -> str:
    """The section "Which source set which constant"."""
    return blocks(
        "## Which source set which constant",
        constants_table(fmt))


def mechanisms_section(fmt: str) -> str:
    """The section "What each mechanism contributes": the ablation and the main kernels'
    terms."""
    return blocks(
        "## What each mechanism contributes",
        "Predicted time with one `TimingOptions` switch off, divided by the prediction with "
        "all on (`attnsim run ... --no-<switch>` does the same for one run); 'set by' is the "
        "mechanism that sets the main kernel's time.",
        ablation_table(fmt),
        "The main kernel's terms (µs; each unoverlapped; 'step latency' is what its tile "
        "steps wait on their instructions' latencies, per SM, and 'chain' the GEMM-softmax "
        "dependency chain, that wait included, with the chains in flight per SM):",
        breakdown_table(fmt))


def how_compared_section() -> str:
    """The section "How the numbers are compared": workloads, TFLOP/s, % of peak,
    programs."""
    bullets = [
        "- **Workloads.** The papers' sweep (flash-attention README, A100: head dimension 64 or "
        "128, hidden dimension 2048, sequence length 512 to 16k, batch 16k / N; the FA-3 paper "
        "sizes its inputs the same way with head dim 64, 128 and 256), fp16 unless stated, on "
        "`a100-80gb` (A100 SXM4 80GB) and `h100-sxm` (H100 SXM5 80GB).",
        "- **TFLOP/s** are counted the way the FlashAttention benchmark counts them "
        "(4·B·N²·H·d forward, halved when causal; backward 2.5x, forward+backward 3.5x) and "
        "divided by the *predicted* time, so published and predicted throughputs divide the "
        "same work by their times.",
        "- **% of peak** divides by the dense datasheet peak (312 TFLOP/s A100, 989.4 H100 "
        "fp16), as the papers do.",
        "- **Programs.** Each figure is predicted with the program that produced it, where "
        "it differs from the simulator's default: " + programs_text() + "."]
    return blocks(
        "## How the numbers are compared",
        "\n".join(bullets))


def sources_section() -> str:
    """The section "Sources": every source, with the words quoted from it."""
    return blocks(
        "## Sources",
        sources_text())


def document(fmt: str = "github") -> str:
    """The whole page, its tables in ``fmt`` (a tabulate format; github: markdown)."""
    return blocks(intro_section(), targets_section(fmt), primary_figures_section(fmt),
                  fa3_forward_charts_section(fmt), fa3_backward_charts_section(fmt),
                  fa2_charts_section(fmt), switches_section(fmt), flashmla.section(fmt),
                  flash_decoding.section(fmt),
                  still_off_section(fmt),
                  constants_section(fmt),
                  mechanisms_section(fmt), how_compared_section(), sources_section()) + "\n"
