"""The sources of the published figures, each with the words it was read from.

The page cites them by key ([FA3-T2], [TB2296], ...) and lists them whole at its end.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    key: str
    citation: str
    where: str          # address where the text was read
    quote: str


SOURCES = (
    Source("FA2", "Dao 2023, FlashAttention-2, arXiv 2307.08691, abstract",
           "https://huggingface.co/papers/2307.08691 (abstract; the sentence is quoted whole "
           "in github.com/vtabbott/Efficient_Deep_Learning)",
           "FlashAttention is still not nearly as fast as optimized matrix-multiply (GEMM) "
           "operations, reaching only 25-40% of the theoretical maximum FLOPs/s. [...] These "
           "yield around 2x speedup compared to FlashAttention, reaching 50-73% of the "
           "theoretical maximum FLOPs/s on A100"),
    Source("FA2-intro", "Dao 2023, FlashAttention-2, arXiv 2307.08691, §1 (introduction)",
           "https://arxiv.org/abs/2307.08691 (§1, read in the paper's transcriptions; the "
           "ICLR 2024 version numbers the two figures 6 and 7)",
           "while FlashAttention is already 2-4x faster than a standard attention "
           "implementation, the forward pass only reaches 30-50% of the theoretical maximum "
           "FLOPs/s of the device (Fig. 5), while the backward pass is even more challenging, "
           "reaching only 25-35% of maximum throughput on A100 GPU (Fig. 6). [...] "
           "FlashAttention-2 achieves around 2x speedup over FlashAttention, reaching up to 73% "
           "of the theoretical max throughput in the forward pass, and up to 63% of the "
           "theoretical max throughput in the backward pass"),
    Source("FA2-s4", "Dao 2023, FlashAttention-2, arXiv 2307.08691, §4 (empirical "
           "validation) and §4.1 (benchmarking attention, A100 80GB SXM4; Figs. 4-7)",
           "https://arxiv.org/abs/2307.08691 (§4 and §4.1; the same text in the paper's "
           "transcriptions)",
           "FlashAttention-2 is 1.7-3.0x faster than FlashAttention, 1.3-2.5x faster than "
           "FlashAttention in Triton, and 3-10x faster than a standard attention "
           "implementation. [...] Just running the same implementation on H100 GPUs (using no "
           "special instructions to make use of new features such as TMA and 4th-gen Tensor "
           "Cores), we obtain up to 335 TFLOPs/s (Fig. 7) [Fig. 7: attention forward + "
           "backward speed, H100 80GB SXM5]"),
    Source("FA2-shapes", "flash-attention README, Performance / A100",
           "github.com/Dao-AILab/flash-attention README.md",
           "Head dimension 64 or 128, hidden dimension 2048 (i.e. either 32 or 16 heads). "
           "Sequence length 512, 1k, 2k, 4k, 8k, 16k. Batch size set to 16k / seqlen. "
           "[figure: FlashAttention speedup on A100 80GB SXM5 with FP16/BF16]"),
    Source("FA-flops", "flash-attention benchmarks/benchmark_flash_attention.py, flops()",
           "github.com/Dao-AILab/flash-attention benchmarks/benchmark_flash_attention.py "
           "(also quoted in the flash-attention GitHub thread #477)",
           "f = 4 * batch * seqlen**2 * nheads * headdim // (2 if casual else 1); "
           "return f if mode == 'fwd' else (2.5 * f if mode == 'bwd' else 3.5 * f)"),
    Source("FA-eager", "flash-attention benchmarks/benchmark_flash_attention.py and "
           "hopper/benchmark_flash_attention.py (the FA-3 benchmark), attention_pytorch()",
           "github.com/Dao-AILab/flash-attention (both files define the same function)",
           "the 'Pytorch' method the benchmarks time: rearrange of the packed qkv, "
           "torch.baddbmm(scores, q, k, beta=0, alpha=softmax_scale), causal: "
           "torch.triu(torch.full((seqlen, seqlen), -10000.0), 1) added as "
           "causal_mask.to(dtype=scores.dtype), torch.softmax, F.dropout, "
           "torch.einsum('bhts,bshd->bthd', ...) — simulated kernel by kernel by "
           "standard --program pytorch-eager (algorithms/standard/pytorch_eager.py); the "
           "backward as flash_attn/utils/benchmark.py's benchmark_backward times it: one forward "
           "outside the timer, grad = torch.randn_like(y), then per call 'x.grad = None' and "
           "y.backward(grad, retain_graph=True) (autograd's kernels: "
           "algorithms/standard/pytorch_eager_backward.py); dropout_p = 0.0 in both benchmarks; "
           "the Pytorch timing is wrapped in 'try: ... except:  # Skip if OOM', any exception "
           "becoming a NaN bar"),
    Source("FA2-1059", "T. Dao, in the flash-attention GitHub thread #1059 (2024-07-16)",
           "https://github.com/Dao-AILab/flash-attention/issues/1059",
           "FA2 on A100 is already at around 70% theoretical max FLOPS"),
    Source("FA3", "Shah et al. 2024, FlashAttention-3, arXiv 2407.08608, abstract",
           "https://huggingface.co/papers/2407.08608 (abstract)",
           "with FlashAttention-2 achieving only 35% utilization on the H100 GPU. [...] "
           "FlashAttention-3, achieves speedup on H100 GPUs by 1.5-2.0x with FP16 reaching up "
           "to 740 TFLOPs/s (75% utilization), and with FP8 reaching close to 1.2 PFLOPs/s"),
    Source("FA3-T2", "Shah et al. 2024, FlashAttention-3, arXiv 2407.08608, §4.2, Table 2 "
           "(pipelining ablation)", "https://arxiv.org/abs/2407.08608 (Table 2, p. 11; the "
           "shape is given in the text above it)",
           "(batch, seqlen, nheads, hdim) = (4, 8448, 16, 128), non-causal FP16 forward: "
           "FlashAttention-3 3.538 ms, 661 TFLOPs/s; No GEMM-Softmax Pipelining, "
           "Warp-Specialization 4.021 ms, 582; GEMM-Softmax Pipelining, No Warp-Specialization "
           "4.105 ms, 570"),
    Source("FA3-blog", "T. Dao et al., 'FlashAttention-3: Fast and Accurate Attention with "
           "Asynchrony and Low-precision', blog post (2024-07-11), 'Inter-warpgroup overlapping "
           "with pingpong scheduling' and 'Intra-warpgroup overlapping of GEMM and Softmax'",
           "https://tridao.me/blog/2024/flash3/ (read in a copy of the post's source in the "
           "code index)",
           "The first and easiest way to overlap GEMM and softmax is to do nothing at all! The "
           "warp schedulers already try to schedule warps so that if some warps are blocked "
           "(e.g., waiting for GEMM results), other warps can run. That is, the warp "
           "schedulers do some of this overlapping for us, for free. [...] pingpong "
           "scheduling can improve FP16 attention forward pass from around 570 TFLOPS to 620 "
           "TFLOPS (head dim 128, seqlen 8K). [...] This pipelining increases throughput from "
           "around 620 TFLOPS to around 640-660 TFLOPS for FP16 attention forward — batch and "
           "heads not stated: read as the paper's benchmark shape (16k tokens, 2048 hidden: "
           "batch 2, 16 heads)"),
    Source("FA3-sass", "FlashAttention-3's release compiled with the ptxas its maintainers "
           "recommended and later pinned, and read "
           "off the SASS (benchmarks/sass_schedule.py; reports/fa3_sass_schedule.json)",
           "github.com/Dao-AILab/flash-attention 7f67966c hopper/flash_fwd_hdim{64,128,256}"
           "_fp16_sm90.cu and mainloop_fwd_sm90_tma_gmma_ws.hpp (the backward: "
           "flash_bwd_hdim{64,128}_fp16_sm90.cu, flash_bwd_kernel.h), CUTLASS at its submodule's "
           "fa4f6359; ptxas 12.3.107 (pip nvidia-cuda-nvcc-cu12==12.3.107), the toolchain "
           "hopper/setup.py pinned ('NVIDIA_TOOLCHAIN_VERSION = {\"nvcc\": \"12.3.107\"}', "
           "'nvcc 12.3 gives the best perf currently', 7a802796 until 454ce315) and the README "
           "recommended ('For now, we highly recommend CUDA 12.3 for best performance', "
           "7435839e); disassembled with cuobjdump",
           "mainloop, per K/V tile: flash::gemm(Q K_j^T, wg_wait=-1); softmax.rescale_o; "
           "flash::gemm(P V, wg_wait=-1); warpgroup_wait<1>(); softmax.max; "
           "softmax.online_softmax; warpgroup_wait<0>(). SASS of the steady-state loop (d = "
           "64, non-causal): HGMMA.64x128x16 x 4 (Q K^T), HGMMA.64x64x16 x 8 (P V), "
           "WARPGROUP.DEPBAR.LE gsb0, 0x1, 33 FMNMX, WARPGROUP.DEPBAR.LE gsb0, 0x0, then all "
           "66 MUFU.EX2, 66 FFMA, 64 FADD, 32 F2FP; d = 128 the same with 0 of 90 MUFU before "
           "the second wait; d = 256 17 of 42 (causal 0 of 42); d = 128 causal 22 of 66. The "
           "same placement at d = 64 and 128 with ptxas 12.4, 12.6, 12.8 and 13.0; ptxas 12.5 "
           "leaves the MUFU before the wait at d = 128. Backward (compute_dqkv_ws, d = 64): "
           "HGMMA x 8 (dQ), WARPGROUP.DEPBAR.LE gsb0, 0x0, HGMMA x 8 (S, dP), "
           "WARPGROUP.DEPBAR.LE gsb0, 0x1, 19 MUFU.EX2, WARPGROUP.DEPBAR.LE gsb0, 0x0, 45 "
           "MUFU.EX2, HGMMA x 16 (dV, dK), WARPGROUP.DEPBAR.LE gsb0, 0x0; d = 128: 7 and 25 "
           "MUFU.EX2"),
    Source("TB2391", "pytorch/benchmark PR #2391 (commit ff65cb6), test plan",
           "https://github.com/pytorch/benchmark/pull/2391 "
           "(app.semanticdiff.com/gh/pytorch/benchmark/commit/ff65cb67...)",
           "(Batch, Heads, SeqLen, Dhead) ... flash_v3-tflops: (32, 16, 512, 128) 430.32 ... "
           "(1, 16, 16384, 128) 620.73 — GPU not named in this commit; the same operator's "
           "PR #2296 names H100; causal not stated"),
    Source("TB2296", "pytorch/benchmark PR #2296 (commit d5f0a12), test plan",
           "https://github.com/pytorch/benchmark/pull/2296",
           "Run with sdpa, triton_tutorial_flash_v2, and colfax_cutlass on H100: --batch 128 "
           "--n-heads 8 --d-head 128 ... SeqLen sdpa-latency sdpa-tflops ... 1024 1.91248 "
           "287.457 ... 16384 462.649 304.199 — latency in ms; causal not stated (the "
           "TFLOP/s match the non-causal 4·B·H·N²·d); SDPA's backend not stated"),
    Source("TB-CI", "pytorch-labs/tritonbench GitHub thread '[GPU_UTILS] H100 specs' "
           "(2024-11-26), a maintainer's reply quoted in the thread",
           "https://github.com/meta-pytorch/tritonbench/issues/78",
           "I think this is because in our CI infra (uses GCP spot instances), the GPU is H100 "
           "PCI-E (tritonbench grew out of pytorch/benchmark's triton userbenchmark, the "
           "harness of TB2296, TB2391 and TB2443)"),
    Source("TB-DEVGPU", "pytorch-labs/tritonbench GitHub thread 'flash_v3 performance is "
           "slower than cudnn and triton_tutorial_flash_v2 on certain input and H100' "
           "(2025-01-23 to 2025-05-03)", "https://github.com/meta-pytorch/tritonbench/issues/141",
           "dtype: fp16 [...] --batch 8 --n-heads 16 --d-head 128 --seq-len 8192 [...] "
           "(8, 16, 8192, 128) cudnn-tflops 581.868 triton_tutorial_flash_v2-tflops 469.105 "
           "flash_v3-tflops 465.518 [...] This is because we were testing on devgpu H100."),
    Source("PT-SOFTMAX", "PyTorch aten/src/ATen/native/cuda/SoftMax.cu, "
           "softmax_backward_cuda_out (the CUDA softmax backward)",
           "github.com/pytorch/pytorch aten/src/ATen/native/cuda/SoftMax.cu at 000cace5 (2024, "
           "with the shared-memory forward); the same two lines in the file before that "
           "forward was added and in its 2018 form (softmax_backward_cuda)",
           "Tensor tmp = grad * output; host_softmax_backward<SoftMaxBackwardEpilogue, "
           "false>(tmp, output, dim, half_to_float, grad_input); [the epilogue:] // XXX: "
           "gradOutput that we get here is really gradOutput * output [...] return "
           "static_cast<T>(gradOutput - output * sum); — an elementwise product written out "
           "whole, then the row kernel (cunn_SoftMaxBackward, or the warp softmax for rows of "
           "at most 1024) on it: simulated as the eager backward's softmax_bwd_mul and "
           "softmax_bwd (algorithms/standard/pytorch_eager_backward.py)"),
    Source("STREAM-OCC", "RRZE gpu-benches (D. Ernst), gpu-stream: 'Measures the bandwidth "
           "of several streaming kernels for varying occupancy'; its 'scale' kernel "
           "A[i] = B[i] * 1.2 in doubles, one element a thread, two blocks an SM",
           "github.com/RRZE-HPC/gpu-benches, read in the fork xxrjun/gpu-benches "
           "(gpu-stream/a100_80.txt and gh200.txt at 977b0870, a100_40.txt at d0c041ed) and "
           "te42kyfo/gpu-benches (cuda-stream/h100_pcie.txt at cdcc732d)",
           "'scale' GB/s at 64, 128, 256, 512, 768, 1024, 1536, 2048 threads an SM: A100 80GB "
           "159, 303, 579, 1025, 1379, 1577, 1682, 1737 (triad at full occupancy 1794); "
           "A100 40GB 151, 292, 548, 956, 1245, 1338, 1367, 1382 (triad 1358); H100 PCIe "
           "183, 341, 607, 1037, 1378, 1583, 1666, 1704 (triad 1832); GH200 237, 464, 854, "
           "1397, 1868, 2269, 2854, 3174 (triad 3783)"),
    Source("ATEN-LOOP", "PyTorch aten/src/ATen/native/cuda/CUDALoops.cuh, gpu_kernel_impl "
           "(launch_vectorized_kernel for contiguous iterators, launch_legacy_kernel "
           "otherwise), its loop written out and compiled",
           "github.com/pytorch/pytorch aten/src/ATen/native/cuda/CUDALoops.cuh (read at "
           "002a5676); benchmarks/aten_elementwise_loop.cu and "
           "benchmarks/aten_elementwise_sass.py (nvcc 13.0, -O3, sm_80 and sm_90; the run: "
           "reports/aten_elementwise_sass.json)",
           "if (contiguous) { return launch_vectorized_kernel(numel, f, data); } auto "
           "offset_calc = ::make_offset_calculator<traits::arity + 1>(iter); constexpr int "
           "unroll_factor = sizeof(arg0_t) >= 4 ? 2 : 4; launch_legacy_kernel<128, "
           "unroll_factor>(numel, [=] GPU_LAMBDA(int idx) { auto offsets = "
           "offset_calc.get(idx); arg0_t* out = (arg0_t*)(data[0] + offsets[0]); *out = "
           "invoke(f, &data[1], &offsets[1], 1); }); — compiled, a thread's global memory "
           "operations in order: LDG LDG STG, four times (12 or 17 registers)"),
    Source("ATEN-SASS", "PyTorch's row softmax (SoftMax.cu, PersistentSoftmax.cuh) compiled "
           "as PyTorch builds it, without --use_fast_math, read off its SASS; and PyTorch PR "
           "#122970 (2024-03-29) on why it keeps std::exp",
           "benchmarks/aten_softmax_math.cu and benchmarks/aten_softmax_sass.py (nvcc 13.0, "
           "-O3, sm_80 and sm_90; the run: reports/aten_softmax_sass.json); "
           "https://github.com/pytorch/pytorch/pull/122970",
           "per element, sm_80 and sm_90 alike: the output pass std::exp(x - max) / sum = "
           "HADD2.F32, FADD, [expf:] FFMA.SAT, FFMA.RM, FADD, SHF.L, FFMA, FFMA, MUFU.EX2, "
           "FMUL, [IEEE division:] MUFU.RCP, 5 FFMA, FCHK, BSSY, BSYNC, BRA; the sum pass "
           "the same expf with its FMUL fused into the sum's FFMA; the warp kernel one expf "
           "and one division an element. PR #122970: 'We were able to recover the gap by "
           "using native `__expf` but we decided to leave `std::exp` to avoid affecting "
           "numerical stability.'"),
    Source("FA-1589", "flash-attention GitHub thread 'benchmark is low on B200' (2025-04-13), "
           "the reporter's output of benchmarks/benchmark_flash_attention.py",
           "https://github.com/Dao-AILab/flash-attention/issues/1589",
           "flash_attn 2.7.4.post1 and torch 2.8.0.dev20250408+cu128 on B200 [...] causal=False, "
           "headdim=64, batch_size=32, seqlen=512: Pytorch fwd: 76.05 TFLOPs/s, bwd: 108.36 "
           "[...] batch_size=16, seqlen=1024: Pytorch fwd: 88.67, bwd: 123.00 [...] "
           "batch_size=8, seqlen=2048: Pytorch fwd: 57.73, bwd: 168.60 [...] batch_size=4, "
           "seqlen=4096: Pytorch fwd: 68.98, bwd: 178.36 [...] batch_size=2, seqlen=8192: "
           "Pytorch fwd: 62.18, bwd: 176.59 — the benchmarks' eager program ([FA-eager]) on a "
           "GPU the model has no constants for: quoted, not compared"),
    Source("FA3-1777", "flash-attention GitHub thread 'H100 PCIE fa3 performs similar as "
           "triton' (2025-07-26/27), the reporter's figures",
           "https://github.com/Dao-AILab/flash-attention/issues/1777",
           "settings: batch_size 16, num heads 32, head dim 64, ctx length 1024, causal=False; "
           "hardware: h100 pcie [...] fa3 243 TFLOPS while in fa3 H100 SXM it is 392 TFLOPS "
           "[...] seq len 1k 2k 4k 8k [...] FA3: 243, 298, 310, 323 — the FA-3 of mid-2025 "
           "(hopper/tile_size.h then: 192 x 192 tiles at d = 64 non-causal, P V reading P from "
           "shared memory); the batch at 2k-8k is not restated"),
    Source("TB2443", "pytorch/benchmark PR #2443 (2024-08-28), test plan",
           "https://github.com/pytorch/benchmark/pull/2443",
           "run_benchmark.py triton --op flash_attention --d-head 128 --only "
           "sdpa,flash_v2,flex_attention: (Batch, Heads, SeqLen, Dhead) sdpa-latency "
           "flash_v2-latency ... (32, 16, 512, 128) 0.24512 0.236768 ... (1, 16, 16384, 128) "
           "6.55098 6.14246 — ms, non-causal; GPU not named"),
    Source("FA3-fig", "FlashAttention-3 paper, forward-speed bar charts: the 16-bit ones as "
           "the flash-attention repository ships them, the fp8 ones from machine "
           "transcriptions of the paper's images",
           "github.com/Dao-AILab/flash-attention assets/flash3_fp16_fwd.png (the six 16-bit "
           "charts with their captions; values read from the bars' labels, the d = 256 "
           "non-causal FlashAttention-3 bar at 1k from a transcription, "
           "subtext.edge.nugit.net/image/72bb6693..., as its label sits under the legend); "
           "fp8: subtext.edge.nugit.net/image/32f2f2fe... and .../8a30d0dd... (hd256, two "
           "transcriptions that agree), .../f474e7f2... (hd256 B), .../c33ff2e1... (hd128), "
           ".../0c6bcc5c... (hd64), .../66c4bb4b... (hd64 B, 512 and 1k only: the "
           "transcription stops there)",
           "Attention forward speed, head dim 128 (H100 80GB SXM5) — Standard attention / "
           "FlashAttention-2 / Triton / cuDNN / FlashAttention-3, Speed (TFLOPs/s) per "
           "sequence length 512..16k; '(c) Forward, without causal mask, head dim 128': "
           "FlashAttention-3 467, 565, 625, 638, 646, 648 (cuDNN 497 at 512); '(d) Forward, "
           "with causal mask, head dim 128': 292, 423, 521, 579, 602, 616; (a), (b) head dim "
           "64 and (e), (f) head dim 256 likewise without and with the mask. The fp8 "
           "transcriptions do not say which chart is causal: of two at a head dimension the "
           "one whose N = 512 bar is lower is read as causal; the one fp8 head dim 128 chart "
           "(FA-3 348-1008) as non-causal"),
    Source("FA3-bwd-fig", "FlashAttention-3 paper, backward-speed bar charts (machine "
           "transcriptions of the chart images)",
           "subtext.edge.nugit.net/image/40bf2854... (head dim 64, two transcriptions that "
           "agree), .../f60142e2... (head dim 128, two transcriptions that agree)",
           "Attention backward speed, head dim 64 / head dim 128 (H100 80GB SXM5) — Standard "
           "attention / FlashAttention-2 / cuDNN / FlashAttention-3, TFLOPs/s per sequence "
           "length 512..16k; FlashAttention-2: d 64 198, 238, 264, 279, 287, 291; d 128 214, "
           "260, 291, 310, 318, 322; standard attention: d 64 68, 76, 88, 92, 95, OOM; d 128 "
           "104, 131, 159, 174, 181, OOM. Non-causal: the standard-attention bars (d 128: 104 "
           "at 512) are above the causal forward chart's (26) and near the non-causal one's "
           "(74)"),
    Source("FA2-fig", "FlashAttention-2 paper, Fig. 4 (A100) and Fig. 7 (H100): attention "
           "forward + backward speed, the same charts as the flash-attention README's",
           "github.com/Dao-AILab/flash-attention assets/flash2_a100_fwd_bwd_benchmark.png and "
           "assets/flash2_h100_fwd_bwd_benchmark.png (added with the FlashAttention-2 release, "
           "commit 4f285b35, 2023-07-17), values read from the bars' labels",
           "Attention forward + backward speed (A100 80GB SXM4) / (H100 80GB SXM5), (a) without "
           "causal mask, head dimension 64, (b) ... 128, (c) with causal mask, head dimension 64, "
           "(d) ... 128 — Pytorch / FlashAttention / xformers / FlashAttention Triton / "
           "FlashAttention-2 (H100: Pytorch / FlashAttention / FlashAttention-2), Speed "
           "(TFLOPs/s) per sequence length 512..16k. A100 (b) FlashAttention-2: [under the "
           "legend], [under the legend], 187, 196, 201, 203; H100 (b) FlashAttention-2: 248, "
           "294, 320, 326, 335, 338; H100 (b) FlashAttention: 127, 127, 128, 131, 137, 139; "
           "Pytorch, 512..8k and OOM at 16k, A100 (a) 36, 40, 43, 45, 46, (b) 53, 67, 76, 79, "
           "86, (c) 15, 16, 17, 18, 18, (d) 23, 28, 32, 32, 34; H100 (a) 62, 72, 81, 86, 87, "
           "(b) 93, 120, 145, 160, 167, (c) 26, 29, 31, 32, 32, (d) 40, 50, 57, 61, 63"),
    Source("FA1-grid", "flash-attention v1 csrc/flash_attn/src/fmha_fwd_launch_template.h "
           "and fmha_bwd_launch_template.h (commits a44f48df 'Split fwd on the seqlen_q "
           "dimension', 2022-10-21, and 55778193 'Parallelize CUDA bwd along seqlen_k "
           "instead of seqlen_q', 2022-11-05; as at 8a2ece89)",
           "github.com/Dao-AILab/flash-attention",
           "num_splits_heuristic_fwd: efficiency = n_waves / ceil(n_waves) for 1..max_splits "
           "splits, the first within 95% of the best; dim3 grid(b, h, num_splits). "
           "num_splits_heuristic_bwd: a CTA per head or seqlen_k / blocksize CTAs per head "
           "(discounted by 1 + blocksize / seqlen; causal: 1 + 0.5 blocksize / seqlen, and "
           "always when seqlen / blocksize >= 10); dq accumulated in an fp32 dq_tmp, zeroed "
           "before and copied to dq after"),
    Source("FA3-clock", "Shah et al. 2024, FlashAttention-3, arXiv 2407.08608, Appendix C.1 "
           "(system and libraries; the same sentence in the May and October 2024 versions)",
           "https://arxiv.org/abs/2407.08608",
           "We benchmark the speed on an H100 80GB SXM5 (700W). [...] To reduce variability, "
           "we fix the GPU clock speed to 1830MHz (clock speed used to calculate the 989 "
           "TFLOPS FP16 theoretical max throughput)."),
    Source("FA3-fp8-note", "Shah et al. 2024, FlashAttention-3, arXiv 2407.08608, footnote "
           "10 (on its FP8 benchmarks)", "https://arxiv.org/abs/2407.08608",
           "For our benchmarks, FP16 FlashAttention-3 has a persistent kernel and load "
           "balancing strategy, while FP8 FlashAttention-3 does not. This partly explains why "
           "FP8 FlashAttention-3 does not perform as well for small sequence length and causal "
           "masking compared to the FP8 cuDNN kernels."),
    Source("FA3-pingpong", "Shah et al. 2024, FlashAttention-3, arXiv 2407.08608, §3.1 "
           "(pingpong scheduling)", "https://arxiv.org/abs/2407.08608",
           "ideally we'd want the exponential calculation to be scheduled when the Tensor "
           "Cores are performing the matmul. To do so, we use synchronization barriers "
           "(bar.sync instructions) to force the GEMMs [...] of warpgroup 1 to be scheduled "
           "before the GEMMs of warpgroup 2"),
    Source("FA3-src", "flash-attention hopper/flash_fwd_launch_template.h and "
           "hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp at the FA-3 release (commit 7f67966c, "
           "2024-07-11; its backward: hopper/flash_bwd_launch_template.h, flash_bwd_kernel.h) "
           "and at the first FP8 forward (commit 5018ac6a, 2024-07-30, 'Fp8 kernel "
           "with in-kernel transpose of V in producer'), hopper/tile_size.h (release 2.8.4, "
           "commit 0251105a)", "github.com/Dao-AILab/flash-attention",
           "7f67966c run_mha_fwd_hdim64: Flash_fwd_kernel_traits<64, 192, 128, 16 warps, 2 "
           "stages> (3 consumer warpgroups, P V from registers: rs_op_selector), "
           "flash_fwd_kernel.h warpgroup_reg_alloc<kNWarps == 12 ? 240 : 160>; hdim128: 128 x "
           "(causal 128 : 176), 12 warps; hdim256: 128 x 80; the ping-pong's scheduler barrier "
           "'UseSchedulerBarrier = kHeadDim <= 128'. 5018ac6a: 'UseSchedulerBarrier = "
           "cutlass::sizeof_bits_v<Element> == 8 ? kHeadDim >= 128 : kHeadDim <= 128' (fp8 "
           "hdim64: 192 x 128, 16 warps); run_mha_fwd_hdim64_fp8 'kBlockM = 192; kBlockN = "
           "128; kStages = 4', hdim128_fp8 '128 ... 256 ... 2', hdim256_fp8 '128 ... 128 ... "
           "2', causal or not; mma_fp8: 'flash::gemm</*zero_init=*/true, /*wg_wait=*/0>"
           "(tiled_mma0, ...)', the softmax, then 'flash::gemm</*zero_init=*/false, "
           "/*wg_wait=*/0>(tiled_mma1, ...)'. 1899c970 (pull request #1075 merged): the fp8 "
           "branch of run_mha_fwd_hdim128 'Flash_fwd_kernel_traits<Headdim, 128, 128, 12, 4, "
           "...>' on the 16-bit mainloop. 0251105a tile_size_fwd_sm90, fp16, "
           "d <= 64: {192, causal ? 128 : 192, MmaPV_is_RS = causal, IntraWGOverlap = true}. "
           "7f67966c backward: run_mha_bwd_hdim64 'Flash_bwd_kernel_traits<Headdim, 128, 128, "
           "12, true, ...>', hdim128 '<Headdim, 64, 128, 12, true, ...>', hdim256 empty, "
           "each 'run_flash_bwd<Flash_bwd_kernel_traits<...>, false>' (template parameter "
           "Is_causal); compute_dqkv_ws: 'NamedBarrier::sync(NumMmaThreads + 32, 0 /*id*/)' "
           "every step, S and dP issued together, 'warpgroup_wait<1>()' before the exp, "
           "'tma_reduce_add_dQ'"),
    Source("CUDA-BP", "CUDA C++ Best Practices Guide, 'Coalesced Access to Global Memory'",
           "https://docs.nvidia.com/cuda/cuda-c-best-practices-guide/index.html"
           "#coalesced-access-to-global-memory",
           "(paraphrased) the concurrent accesses of a warp's threads coalesce into as many "
           "transactions as the 32-byte segments they touch; with a large stride between "
           "threads every access is a 32-byte transaction of its own, of which the thread uses "
           "its element's bytes"),
    Source("FA2-src", "flash-attention csrc/flash_attn/src/flash_fwd_launch_template.h and "
           "kernel_traits.h (release 2.8.4, commit 0251105a)",
           "github.com/Dao-AILab/flash-attention",
           "run_mha_fwd_hdim128 on sm80 and sm90 (the is_sm8x branch is sm86/sm89 only): "
           "Flash_fwd_kernel_traits<128, 128, 64, 4, false, false, T> — 128 x 64 tiles, 4 warps "
           "stacked along the rows, Q not kept in registers (re-read from shared memory with "
           "ldmatrix on every K/V tile), 64 KiB of shared memory; hdim64: 128 x 128, 4 warps, "
           "48 KiB; hdim256: 'if (max_smem_per_block >= 2 * Headdim * (128 + 2 * 64) && "
           "max_smem_per_sm < 4 * Headdim * (64 + 2 * 64))' 128 x 64 on 8 warps (the A100), "
           "else 64 x 64 on 4 warps, 96 KiB (the H100: two CTAs to its 228 KiB); the same "
           "dispatch at v2.0.0 (4f285b35) and v2.6.0"),
    Source("FA1-tiles", "flash-attention v1 csrc/flash_attn/fmha_api.cpp and "
           "src/fmha_fprop_kernel_1xN.h (commit 8a2ece89)",
           "github.com/Dao-AILab/flash-attention",
           "mha_fwd / mha_bwd: 'blocksize_c = head_size > 64 ? 128 : 256', key lengths <= 128 "
           "run the 128-key kernel; 'o_tmp = torch::empty({total_q, num_heads, head_size}, "
           "opts.dtype(at::kFloat))' when the keys span more than one block; 'softmax_lse = "
           "torch::empty({batch_size, num_heads, max_seqlen_q}, opts.dtype(at::kFloat))'. "
           "device_1xN_: the first K/V block reads neither o_tmp nor lse; every step writes "
           "lse, and O at the element type after a row's last K/V block, o_tmp before; 'Load "
           "the fragments for V. We keep the data in registers during the entire kernel.'"),
    Source("FA1-src", "flash-attention v1 csrc/flash_attn/src/fmha_fwd_hdim128.cu, "
           "fmha_bwd_hdim64.cu, fmha_bwd_hdim128.cu, fmha/kernel_traits.h and "
           "fmha_dgrad_kernel_1xN_loop.h (commit 8a2ece89; the dgrad line is the same at "
           "1fcbe6f0 and v1.0.9, 6d48e14a)",
           "github.com/Dao-AILab/flash-attention",
           "FMHA_kernel_traits<S, D, STEP, WARPS_M, WARPS_N, FLAGS>: forward d = 128 "
           "<128, 128, 16, 1, 4, 0x08u> (d = 64, N >= 256: <256, 64, 16, 1, 4, 0x08u>); "
           "backward d = 64 on sm80 <256, 64, 16, 1, 8, 0x100u>, d = 128 <128, 128, 16, 1, 8, "
           "0x100u> — a key block of S keys walked 16 query rows at a time by 4 warps (forward) "
           "or 8 (backward) splitting the keys; 'K_IN_REGS = (FLAGS & 0x10u) == 0u', "
           "'V_IN_REGS = (FLAGS & 0x100u) == 0u'; fmha_bwd_hdim64.cu: keys <= 128 and sm8x "
           "other than sm80 run 0x08u, 'Don't share smem for K & V, and don't keep V in "
           "registers' on sm80 only (on sm80 and sm90 from [FA1-H100] on); the backward "
           "kernel itself: '// using Gemm1 = Gemm_Q_K<Kernel_traits, "
           "Kernel_traits::K_IN_REGS>;' commented out over 'using Gemm1 = "
           "Gemm_Q_K<Kernel_traits, /*K-in_regs=*/false, elem_type>;', and "
           "'gemm_q_k.reload_k();' at every step"),
    Source("FA1-tables", "Dao et al. 2022, FlashAttention, arXiv 2205.14135, Appendix E.6, "
           "Tables 15, 16, 18 and 19",
           "https://arxiv.org/abs/2205.14135 (the appendix's full benchmarking results)",
           "We measure runtime and memory usage of the attention computation with 8 heads of "
           "dimension 64, and batch size 16 on a machine with one A100 GPU with 40 GB of GPU "
           "HBM. [...] For dropout, we use dropout 0.1 [...] To measure runtime, we take the "
           "average of 100 measurements of the attention call. [...] We use FP16 for all "
           "measurements [...] FlashAttention, forward (ms), 1024 to 65536: 0.68, 2.40, 8.42, "
           "33.54, 134.03, 535.95, 2147.05 (Table 18); with dropout: 0.83, 2.81, 10.38, "
           "41.63, 167.01, 668.74, 2678.11 (Table 15); backward: 1.62, 5.45, 21.57, 84.75, "
           "336.00, 1338.56, 5343.19 (Table 19); with dropout: 1.86, 6.50, 26.21, 104.27, "
           "416.10, 1661.92, 6643.01 (Table 16)"),
    Source("FA1-first", "flash-attention commit 1fcbe6f0, 'First release' (2022-05-20), "
           "csrc/stream_attn/src/fmha_fprop_fp16_kernel.sm80.cu, "
           "fmha_dgrad_fp16_kernel_loop.sm80.cu and fmha/softmax.h",
           "github.com/Dao-AILab/flash-attention",
           "forward and backward: 'dim3 grid(launch_params.params.h, launch_params.params.b)' "
           "(backward: 'dim3 grid(params.h, params.b)'): one CTA per head; d = 64: "
           "FMHA_kernel_traits<256, 64, 16, 1, 4, 0x08u> (forward), <256, 64, 16, 1, 8, "
           "0x08u> (backward: V_j in registers, where the later release's 0x100u keeps it in "
           "shared memory on sm80); dropout: 'softmax.template apply_dropout_16bits' in both, "
           "one Philox call ('uint4 tmp_32 = ph()') split into eight uint16 compared with "
           "p_dropout_in_uint16_t, as in every later v1 release"),
    Source("FA1-H100", "flash-attention v1 commit 1b18f1b7, 'Support H100' (2023-03-15; in "
           "every v1.0.x release up to v1.0.9, 6d48e14a, the last before FlashAttention-2)",
           "github.com/Dao-AILab/flash-attention",
           "fmha_api.cpp: 'bool is_sm90 = dprops->major == 9 && dprops->minor == 0; "
           "TORCH_CHECK(is_sm90 || is_sm8x || is_sm75);' (before it the release refused the "
           "H100: 'TORCH_CHECK(is_sm8x || is_sm75)'); fmha_bwd_hdim64.cu, keys >= 256: "
           "'if ((dprops->major == 8 && dprops->minor == 0) || (dprops->major == 9 && "
           "dprops->minor == 0))' runs <256, 64, 16, 1, 8, 0x100u>, '[...] uses more shared "
           "memory, which is fine on A100 and H100 but not other GPUs'. The kernels and their "
           "tiles are otherwise those of 8a2ece89 (the commits between change the dropout "
           "seed's storage, CUDA-graph capture and compilation, not the tiles or the traffic)"),
    Source("FA3-1075", "flash-attention pull request #1075, 'Changes For FP8' (Colfax "
           "Research, 2024-07-19, eight days after the paper), description",
           "https://github.com/Dao-AILab/flash-attention/pull/1075",
           "This PR contains the changes required for FP8 for persistent + ping-pong schedule, "
           "with pre-transpose of V in python. The following are the experimental results from "
           "PCIe based H100: ### causal=False, headdim=128, batch_size=32, seqlen=512 ### [...] "
           "Flash3 fwd: 433.25 TFLOPs/s, 0.15861446736380458 ms [...] batch_size=16, "
           "seqlen=1024 [...] 538.23 TFLOPs/s, 0.2553513351206978 ms [...] batch_size=8, "
           "seqlen=2048 [...] 605.27, 0.4541443311609328 ms [...] batch_size=4, seqlen=4224 "
           "[...] 618.83, 0.9447746366883317 ms [...] batch_size=2, seqlen=8448 [...] 618.05, "
           "1.8919179681688547 ms — the fp8 benchmark of that PR: 2048 / 128 = 16 heads, Q, K, "
           "V already in e4m3 (V transposed before timing), O in fp16. Its baseline, on the "
           "same board: 'Pytorch fwd: 52.28 TFLOPs/s, 1.3145040992336967 ms' (32, 512), "
           "'66.04 TFLOPs/s, 2.0810180343687534 ms' (16, 1024), '73.80 [...], "
           "3.7247368328583734 ms' (8, 2048), '68.44 [...], 8.542563331623873 ms' (4, 4224), "
           "'78.47 [...], 14.902190600211421 ms' (2, 8448), '82.08 [...], 28.49179443437606' "
           "(1, 16896): hopper/benchmark_flash_attention_fp8.py times attention_pytorch (the "
           "benchmarks' eager program, [FA-eager]) on qkv converted to fp16 (as the file reads "
           "at 5018ac6a)"),
    Source("WH-REF", "waynehacking8/blackwell-tensorcore-kernels, results/reference/fa3.txt "
           "and summary.md (a third-party GEMM study that also runs flash-attention's own "
           "benchmark, 2026)",
           "github.com/waynehacking8/blackwell-tensorcore-kernels (scripts/"
           "run_reference_benches.sh: flash-attention main cloned at run time, hopper/"
           "benchmark_attn.py unmodified, NGC PyTorch 26.02, one idle GPU of an 8x H100 SXM5 "
           "box at stock clocks)",
           "headdim = 128, causal = False, seqlen = 8192: Fav2 fwd: 2.831ms, 388.3 TFLOPS; Fav2 "
           "bwd: 8.438ms, 325.8 TFLOPS; Fav3 fwd: 1.453ms, 756.9 TFLOPS. causal = True: Fav2 "
           "fwd: 1.624ms, 338.5 TFLOPS; Fav2 bwd: 4.544ms, 302.5 TFLOPS; Fav3 fwd: 0.745ms, "
           "738.3 TFLOPS — benchmark_attn.py's defaults: bf16, batch 2, 2048 / 128 = 16 heads; "
           "Fav2 is flash_attn.flash_attn_func (the sm80 code), Fav3 the hopper/ build"),
    Source("FA3-1791", "flash-attention pull request #1791, 'ABI stable fa3' (2025-07-31), "
           "its description's 'Results of python benchmark_attn.py' on main",
           "https://github.com/Dao-AILab/flash-attention/pull/1791",
           "headdim = 128, causal = False, seqlen = 8192: Fav2 fwd: 2.972ms, 369.9 TFLOPS; Fav2 "
           "bwd: 9.460ms, 290.6 TFLOPS; Fav3 fwd: 1.668ms, 659.1 TFLOPS; Fav3 bwd: 4.962ms, "
           "553.9 TFLOPS. causal = True: Fav2 fwd: 1.935ms, 284.1 TFLOPS; Fav2 bwd: 4.788ms, "
           "287.1 TFLOPS; Fav3 fwd: 0.873ms, 630.0 TFLOPS; Fav3 bwd: 2.585ms, 531.6 TFLOPS — "
           "benchmark_attn.py's defaults as in WH-REF (bf16, batch 2, 16 heads); the board is "
           "not named; the Fav3 bwd lines are not compared (the backward of that date runs "
           "80 x 128 tiles non-causal at d = 128 and has causal kernels; the model runs the "
           "release's)"),
    Source("FA-1438", "flash-attention GitHub thread 'FA3 forward performance regression on "
           "H200' (2025-01-10 to 2025-01-14), the reporter's runtimes",
           "https://github.com/Dao-AILab/flash-attention/issues/1438",
           "I found that in the forward pass, H200 is slightly slower (4% average). [...] when "
           "(batch_size, num_heads, seq_len, dim)= (1, 8, 32768, 64), - for H100 at forward bf16 "
           "task (full attention), I get 4.27728 ms. - for H200 at forward bf16 task (full "
           "attention), I get 4.51709 ms. I used commit: "
           "3cea2fb6ee54fb7e1aad9db6ac6c9331184b8647 — a build of August 2024 whose d = 64 "
           "forward is the release's (Flash_fwd_kernel_traits<64, 192, 128, 16, 2, ...> in "
           "hopper/flash_fwd_launch_template.h); the boards are named no further: the H100, "
           "at 514 TFLOP/s, is read as the SXM5 (52% of its dense peak; a PCIe board would be "
           "at 68% of its own, above every d = 64 bar of FA-3's charts)"),
    Source("FA2-A100-LOG", "liangan1/GPU_travel, performance/flash-attn/README.md (its "
           "second table) with the benchmark_fav2.py and commit.txt beside it (a third "
           "party's study of FA-2 on the A100, 2026)",
           "github.com/liangan1/GPU_travel (performance/flash-attn/, README.md at 07d0469e)",
           "This file is used to describe the performance of Flash-Attention V2 on the SM80. "
           "[...] The peak frequency is 1410MHZ and it will drop to ~1200MHZ [...] | causal | "
           "bs | seqlen_q | seqlen_kv | kv_heads | TFLOPs/s | time (ms) | True 16 1024 1024 32 "
           "143.70 0.956; True 16 1024 1024 8 140.59 0.978; True 4 1024 4096 32 171 1.401; "
           "True 4 1024 4096 8 174.7 1.377; True 1 4096 4096 32 156.27 0.879; True 1 4096 "
           "4096 8 159.41 0.862; False 16 1024 1024 32 179.11 1.535; False 16 1024 1024 8 "
           "179.48 1.532; False 4 1024 4096 32 179.89 1.528; False 4 1024 4096 8 182.60 "
           "1.505; False 1 4096 4096 32 184.04 1.494; False 1 4096 4096 8 183.63 1.497 — "
           "benchmark_fav2.py: flash_attn_func, fp16, headdim 128, nheads = 4096 // 128, "
           "benchmark_forward with 100 repeats; commit.txt: flash-attention 0586d2e7 "
           "(2026-02-25). The A100's memory size is not stated. The first table's baseline "
           "column (the same non-causal runs, another session) agrees within 1%"),
    Source("PT-SDPA-A100", "pytorch/pytorch pull request 'Update context manager for cudnn' "
           "(May 2024), its description's script and 'A100 Numbers' table",
           "https://github.com/pytorch/pytorch/pull/126122",
           "causal = False [...] batch_sizes = [1] [...] for h, d in zip((32, 16), (64, 128)): "
           "q, k, v = torch.randn(b, s, h * d * 3, dtype=torch.bfloat16, device=\"cuda\", "
           "requires_grad=False).chunk(3, dim=-1) [...] with torch.no_grad(), "
           "sdpa_kernel(backend_enum) [...] | Batch Size | Sequence Length | Heads | Head Dim | "
           "Flash Time (µs) | CUDNN Time (µs) | Flex Time (µs) | [...] | 1 | 4096 | 32 | 64 | "
           "799.391 | 836.327 | 981.234 | [...] | 1 | 4096 | 16 | 128 | 750.131 | 806.964 | "
           "944.766 | [...] | 1 | 8192 | 32 | 64 | 3211.84 | 3234.41 | 3803.09 | — the table "
           "goes on to N = 131072 beyond what was read; the A100's memory size is not stated"),
    Source("PT-SDPA-H100", "pytorch/pytorch pull request 'Add packed layout to SDPA "
           "benchmark' (2024-06-17), its description",
           "https://github.com/pytorch/pytorch/pull/128888",
           "Updates the sdpa benchmark to also measure the packed layout. On my H100 machine "
           "[...] | batch_size | num_heads | q_seq_len | kv_seq_len | embed_dim | is_causal | "
           "dtype | backend | packed_layout | forward_time | backward_time | [...] | 1 | 16 | "
           "4096 | 4096 | 2048 | True | torch.float16 | SDPBackend.FLASH_ATTENTION | True | "
           "334.3069322033899 | 962.5839729729724 | [...] | 1 | 16 | 4096 | 4096 | 2048 | False "
           "| torch.float16 | SDPBackend.FLASH_ATTENTION | True | 457.07045251396613 | [...] — "
           "times in µs; the H100 is not named further"),
    Source("FMLA", "deepseek-ai/FlashMLA, README and tests/test_flash_mla.py at the first "
           "release (commit 414a2f3, 21 February 2025)",
           "github.com/deepseek-ai/FlashMLA (README.md, tests/test_flash_mla.py at 414a2f3)",
           "Achieving up to 3000 GB/s in memory-bound configuration and 580 TFLOPS in "
           "computation-bound configuration on H800 SXM5, using CUDA 12.6. [...] h_kv = 1; d, "
           "dv = 576, 512; causal = True; for b in [128]: for s in [4096, 8192]: for h_q in "
           "[16, 32, 64, 128]:  # TP = 8, 4, 2, 1; for s_q in [1, 2]:  # MTP = 1, 2; for "
           "varlen in [False, True] [...] t = triton.testing.do_bench(flash_mla, ...); FLOPS = "
           "s_q * total_seqlens * h_q * (d + dv) * 2; bytes = (total_seqlens * h_kv * d + b * "
           "s_q * h_q * d + b * s_q * h_q * dv) * (torch.finfo(dtype).bits // 8) — dtype "
           "bfloat16; flash_mla() calls flash_mla_with_kvcache on q of width d = 576, already "
           "in the latent space"),
    Source("FMLA-dive", "deepseek-ai/FlashMLA, docs/20250422-new-kernel-deep-dive.md (commit "
           "c2067be, 22 April 2025)",
           "github.com/deepseek-ai/FlashMLA/blob/main/docs/20250422-new-kernel-deep-dive.md",
           "In the previous version of the Flash MLA kernel, we have achieved impressive "
           "performance: 3000 GB/s in memory-intensive settings and 580 TFlops in "
           "compute-bound settings. [...] An NVIDIA H800 SXM5 GPU has a peak memory bandwidth "
           "of 3.35 TB/s and peak FLOPs of 990 TFlops. However, due to throttling (reducing to "
           "~1600 MHz in our case), the practical peak FLOPs drops to ~865 TFlops — the H100 "
           "SXM5's bandwidth and dense bf16 peak (NVIDIA's H100 datasheet, hwmodels/gpus.py); "
           "the page predicts the H800's figures with the h100-sxm model"),
    Source("FMLA-H100", "ai-bot-pro/achatbot pull request #123, 'feat: add deepseek flash mal "
           "bench on modal H100' (24 February 2025): FlashMLA's tests/test_flash_mla.py run on "
           "a Modal H100 (pytorch/pytorch:2.6.0-cuda12.6 image, FlashMLA cloned that day)",
           "github.com/ai-bot-pro/achatbot/pull/123 (description)",
           "b=128, s_q=1, mean_sk=4096, h_q=16, h_kv=1, d=576, dv=512, causal=True, "
           "varlen=False 0.215 ms, 85 TFLOPS, 2826 GB/s [...] s_q=2, h_q=16, varlen=False "
           "0.218 ms, 168 TFLOPS, 2812 GB/s [...] s_q=1, h_q=32, varlen=False 0.218 ms, 168 "
           "TFLOPS, 2813 GB/s [...] s_q=2, h_q=32, varlen=False 0.223 ms, 327 TFLOPS, 2788 GB/s "
           "[...] s_q=1, h_q=64, varlen=False 0.223 ms, 328 TFLOPS, 2789 GB/s — the stored "
           "text of the log ends there; the log does not name the board, but 2826 GB/s is "
           "above the H100 PCIe's 2.0 TB/s, and Modal's H100s have 80 GB, so it is the SXM5"),
    Source("FD-BLOG", "Dao, Haziza, Massa, Sizov, 'Flash-Decoding for long-context "
           "inference', PyTorch blog (October 2023), 'Component-level micro-benchmarks'",
           "https://pytorch.org/blog/flash-decoding/",
           "We also micro-benchmark the scaled multi-head attention for various sequence "
           "lengths and batch sizes on A100 with inputs in f16. We set the batch size to 1, "
           "and use 16 query heads of dimension 128, for 2 key/value heads (grouped-query "
           "attention), which matches the dimensions used in CodeLLaMa-34b when running on 4 "
           "GPUs. [...] Setting \\ Algorithm | PyTorch Eager (us) | Flash-Attention v2.0.9 "
           "(us) | Flash-Decoding (us) | B=256, seqlen=256 | 3058.6 | 390.5 | 63.4 | [...] | "
           "B=1, seqlen=65536 | 1335.6 | 2300.6 | 64.4 | B=1, seqlen=131072 | 2664 | 4592.2 | "
           "106.6 — ten rows (benchmarks/published/flash_decoding.py has them all); the rows "
           "name B from 256 down to 1, against the sentence's 'batch size to 1'; the page "
           "takes the rows' B"),
    Source("XF-DECODE", "xFormers xformers/benchmarks/benchmark_attn_decoding.py at "
           "106c42af (2023-10-11), with xformers/ops/fmha/flash.py and its third_party/"
           "flash-attention at 601b4dc4 ('Bump to v2.3.0'), csrc/flash_attn/flash_api.cpp",
           "github.com/facebookresearch/xformers",
           "CASES = [...] dict(B=max(1, 2 ** (16 - i)), Mq=1, Mkv=2**i, Hq=16, Hkv=2, K=128) "
           "for i in range(8, 18) [...] if cuda_graph: [...] g = torch.cuda.CUDAGraph() [...] "
           "class AttentionDecodingFlashDecoding: OP: Any = xops.fmha.flash.FwOp [...] "
           "self.k = torch.randn([B, Mkv, Hkv, 1, K], ...).expand(-1, -1, -1, Hq // Hkv, -1) "
           "[...] class AttentionDecodingPyTorchRepeat: [...] k = self.k.reshape([B, Mkv, -1, "
           "K]) [...] flash_attn.flash_attn_func(q, k, v); flash_api.cpp mha_fwd: 'const int "
           "seqlenq_ngroups_swapped = seqlen_q == 1 && num_heads > num_heads_k && [...]' "
           "[...] 'params.num_splits = num_splits_heuristic(batch_size * num_heads * "
           "num_m_blocks, dprops->multiProcessorCount, num_n_blocks, 128)'; "
           "flash_fwd_launch_template.h run_mha_fwd_splitkv_dispatch: 'constexpr int kBlockM "
           "= 64;  // Fixed for all head dimensions' [...] 'constexpr int kBlockN = Headdim "
           "<= 64 ? 256 : (Headdim <= 128 ? 128 : 64)' [...] Flash_fwd_kernel_traits<Headdim, "
           "kBlockM, kBlockN, 4, false, false, T> — the post's cases and columns"),
)


def sources_text() -> str:
    return "\n".join(f"- [{s.key}] {s.citation} — {s.where}: \"{s.quote}\"" for s in SOURCES)
