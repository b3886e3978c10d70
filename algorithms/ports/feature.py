"""GPU port declarations: the feature-map family: linear (elu + 1), rfa (trig), performer
(positive).

Bound: each port moves what its algorithm's module counts (that module states the bound).
"""
from __future__ import annotations

import numpy as np

from algorithms.kernels.common import cdiv
from algorithms.ports.core import (Launch, PortLaunches, PortUnsupported, Scalar, Tensor,
                                   algorithm_module, check_common, head_args, out_tensor,
                                   pad16, qkv_tensors, round_up)


FEATURE_KINDS = {"elu": 0, "trig": 1, "positive": 2}
FEATURE_THREADS = 128        # feature_attn.cu FA_THREADS: the simulator's THREADS_PER_CTA
FEATURE_MAX_CHUNK = 128      # A = φ(Q_c) φ(K_c)ᵀ of a warp's 16 rows stays in registers


def _a16(nbytes: int) -> int:
    return round_up(nbytes, 16)


def feature_smem(kernel: str, kind: str, block: int, d: int, tile_units: int, tiles: int) -> int:
    """Dynamic shared memory of a feature_attn.cu kernel (its carve-up, 16-byte aligned
    pieces): 16-bit tiles with head_dim and feature counts padded to 16, fp32 S_t and z_t."""
    per = 2 if kind == "trig" else 1
    dp, up, mp = pad16(d), pad16(tile_units), pad16(tile_units * per)
    tile = _a16(block * dp * 2)
    w = _a16(up * dp * 2) if kind != "elu" else 0
    phi, state = _a16(block * mp * 2), _a16(mp * d * 4) + _a16(mp * 4)
    row, red = _a16(block * 4), _a16(4 * (FEATURE_THREADS // 32))
    norm = 2 * _a16(mp * 4) if kind == "positive" else 0   # 1 / z and log z per feature
    if kernel == "state":
        return 2 * tile + w + phi + state + row + red
    if kernel == "apply":
        return (tile + w + phi + state + 2 * row + red + norm
                + (_a16(block * d * 4) if tiles > 1 else 0))
    if kernel == "causal":
        return 3 * tile + w + 2 * phi + state + 2 * row + red + norm
    return tiles * block * 4                               # combine: per-row slice weights


def _projection_tensor(name: str, wl, plan) -> Tensor:
    """W of rfa / performer, computed as the module computes it for the same inputs (seed:
    the plan's, else the inputs' seed): (1, P, d) shared by all heads, or (B·H, P, d) for
    performer's ``redraw="head"``."""
    module = algorithm_module(name)
    d, heads = wl.head_dim, wl.batch * wl.heads
    per_head = getattr(plan, "redraw", "none") == "head"

    def derive(inputs):
        from algorithms.kernels.feature_attention import resolve_seed
        seed = resolve_seed(plan.seed, inputs)
        if name == "rfa":
            return module.projection(plan, d, seed)[None]
        fn = module.projection_fn(plan, d, seed)
        if per_head:
            return np.stack([fn(b, h) for b in range(wl.batch) for h in range(wl.heads)])
        return fn(0, 0)[None]

    return Tensor((heads if per_head else 1, plan.projections, d), wl.dtype, "const",
                  derive=derive)


def feature_port(name: str):
    """The port of a feature-map module (``algorithms.kernels.feature_attention`` plans): non-causal
    state + apply kernels, or the causal sweep (+ combine when the state is sliced)."""
    def port(wl, plan, extra=None) -> PortLaunches:
        check_common(name, wl)
        if getattr(wl, "decode", False):
            raise PortUnsupported(f"the {name} port runs the forward sweep; recurrent decoding "
                                  f"(--decode) has no port")
        kind, block, tiles, tu = plan.kind, plan.block, plan.feature_tiles, plan.tile_units
        if kind not in FEATURE_KINDS:
            raise PortUnsupported(f"the {name} port computes elu + 1, trig or positive "
                                  f"features; the plan has {kind!r}")
        if block % 16 or block > FEATURE_MAX_CHUNK:
            raise PortUnsupported(f"the {name} port needs the plan's block a multiple of 16 "
                                  f"and <= {FEATURE_MAX_CHUNK} (16-row MMA tiles, A in "
                                  f"registers); the plan has {block}")
        d, bh, nq = wl.head_dim, wl.batch * wl.heads, wl.seq_q
        total = d if kind == "elu" else plan.projections
        m = plan.features
        if kind == "trig":
            in_scale = 1.0 / plan.sigma
        elif kind == "positive":
            in_scale = float(np.sqrt(wl.scale))
        else:
            in_scale = 0.0
        defines = {"CHUNK": block, "HEAD_DIM": d, "FEAT_KIND": FEATURE_KINDS[kind],
                   "FEAT_UNITS": tu}
        tensors = {**qkv_tensors(wl), "o": out_tensor(wl)}
        w, w_per_head = None, Scalar(0, "int")
        if kind != "elu":
            tensors["w"] = _projection_tensor(name, wl, plan)
            w, w_per_head = "w", Scalar(int(tensors["w"].shape[0] > 1), "int")
        n_q, n_k, heads, group, _ = head_args(wl)
        scale, threads = Scalar(in_scale, "float"), (FEATURE_THREADS, 1, 1)
        units, ntiles = Scalar(total, "int"), Scalar(tiles, "int")

        def smem(kernel):
            return feature_smem(kernel, kind, block, d, tu, tiles)

        if not wl.causal:
            tensors["s_state"] = Tensor((bh, m, d), "fp32", "work")
            tensors["z_state"] = Tensor((bh, m), "fp32", "work")
            shifts = None
            if kind == "positive" and tiles > 1:
                shifts = "shifts"
                tensors[shifts] = Tensor((bh, tiles), "fp32", "work")
            launches = (
                Launch("feature_attn.cu", "feature_state", (tiles, bh, 1), threads,
                       smem("state"), defines,
                       ("k", "v", w, "s_state", "z_state", shifts, n_k, heads, group, scale,
                        w_per_head, units, Scalar(m, "int")), f"{name}_state"),
                Launch("feature_attn.cu", "feature_apply", (cdiv(nq, block), bh, 1), threads,
                       smem("apply"), defines,
                       ("q", w, "s_state", "z_state", shifts, "o", n_q, n_k, scale, w_per_head,
                        ntiles, units, Scalar(m, "int")), f"{name}_apply"))
            return PortLaunches(name, tensors, launches)
        part = (None, None, None)
        if tiles > 1:
            tensors["pnum"] = Tensor((tiles, bh, nq, d), "fp32", "work")
            tensors["pden"] = Tensor((tiles, bh, nq), "fp32", "work")
            part = ("pnum", "pden", None)
            if kind == "positive":
                tensors["plog"] = Tensor((tiles, bh, nq), "fp32", "work")
                part = ("pnum", "pden", "plog")
        launches = [Launch("feature_attn.cu", "feature_causal", (tiles, bh, 1), threads,
                           smem("causal"), defines,
                           ("q", "k", "v", w, "o", *part, n_q, n_k, heads, group, scale,
                            w_per_head, units), f"{name}_causal")]
        if tiles > 1:
            launches.append(Launch("feature_attn.cu", "feature_combine", (cdiv(nq, block), bh, 1),
                                   threads, smem("combine"), defines, (*part, "o", n_q, ntiles),
                                   f"{name}_combine"))
        return PortLaunches(name, tensors, tuple(launches))
    port.__name__ = f"{name}_port"
    return port
