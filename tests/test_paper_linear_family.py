"""The linear-attention family against its papers' equations, written here and sharing no
code with algorithms/{linear,rfa,performer}.py or algorithms/kernels/feature_*.py. Taken from
the modules: only the random projections W (the models' parameters: ``rfa.projection``,
``performer.projection_fn``).

All three compute, for a feature map φ (Katharopoulos et al. 2020, Eq. 5; RFA Eq. 5; FAVOR+'s
D⁻¹(Q′(K′ᵀV))):
    o_i = φ(q_i)ᵀ S_i / φ(q_i)ᵀ z_i,   S_i = Σ_{j visible} φ(k_j) v_jᵀ,   z_i = Σ_{j visible} φ(k_j)
written here as the recurrence S_j = S_{j−1} + φ(k_j) v_jᵀ ("Transformers are RNNs", §3.4),
read after the last key query i sees (all keys, or j <= i + N_k − N_q when causal).
    linear     φ(x) = elu(x) + 1 on the raw q, k                                (§3.2)
    RFA        φ(x) = D^(−1/2) [sin(w_i·x/σ), cos(w_i·x/σ)]_{i<D}, x = q/|q| or k/|k|,
               w_i ~ N(0, I): random Fourier features of exp(−|x − y|²/2σ²) (Rahimi & Recht),
               so that φ(x)·φ(y) ≈ e^(−1/σ²) exp(x·y/σ²) for unit x, y          (§2–3, Eqs. 2–5)
    FAVOR+     φ(x) = m^(−1/2) exp(w_i·x − |x|²/2)_{i<m}, x = q·scale^(1/2): positive random
               features with E[φ(x)·φ(y)] = exp(x·y) = exp(scale q·k)            (Lemma 1)
"""
import numpy as np
import pytest

from algorithms import performer, rfa
from attnsim import Workload, attention_reference, make_inputs, simulate
from hwmodels import get_gpu
from shapes import EXACT_TOL, rel_err

GPU = get_gpu("h100")


def elu_plus_one(x):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def fourier_features(x, w, sigma):
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    proj = unit @ w.T / sigma
    return np.concatenate([np.sin(proj), np.cos(proj)], axis=-1) / np.sqrt(w.shape[0])


def positive_features(x, w, scale):
    x = x * np.sqrt(scale)
    return np.exp(x @ w.T - 0.5 * np.sum(x * x, axis=-1, keepdims=True)) / np.sqrt(w.shape[0])


def recurrent_attention(fq, fk, v, causal):
    """o_i = φ(q_i)ᵀ S / φ(q_i)ᵀ z with the state after the keys query i sees (zero if none)."""
    n_q, n_k = fq.shape[0], fk.shape[0]
    out = np.zeros((n_q, v.shape[1]))
    state, norm = np.zeros((fk.shape[1], v.shape[1])), np.zeros(fk.shape[1])
    seen = 0
    for i in range(n_q):
        last = min(n_k, i + n_k - n_q + 1) if causal else n_k
        while seen < last:                                   # S_j = S_{j−1} + φ(k_j) v_jᵀ
            state += np.outer(fk[seen], v[seen])
            norm += fk[seen]
            seen += 1
        den = fq[i] @ norm
        out[i] = fq[i] @ state / den if den != 0 else 0.0
    return out


def paper_output(wl, inputs, features_of):
    """(B, H, N_q, d): ``features_of(x, b, h, is_key)`` gives φ for head h's rows."""
    group = wl.heads // wl.kv_heads
    out = np.zeros(inputs.q.shape)
    for b in range(wl.batch):
        for h in range(wl.heads):
            q = np.asarray(inputs.q[b, h], np.float64)
            k, v = (np.asarray(x[b, h // group], np.float64) for x in (inputs.k, inputs.v))
            out[b, h] = recurrent_attention(features_of(q, b, h), features_of(k, b, h), v,
                                            wl.causal)
    return out


SHAPES = [
    # batch, heads, kv_heads, seq_q, seq_k, head_dim, causal
    (1, 2, 2, 97, 97, 32, False),
    (1, 2, 2, 97, 97, 32, True),
    (2, 4, 2, 120, 200, 40, False),
    (2, 4, 2, 120, 200, 40, True),        # N_q < N_k: a chunk after a prefix
    (1, 1, 1, 64, 64, 128, True),
]


def workload(shape):
    b, h, g, nq, nk, d, causal = shape
    return Workload(batch=b, heads=h, kv_heads=g, seq_q=nq, seq_k=nk, head_dim=d, causal=causal)


# float32 kernels against these float64 references, measured: linear 1.1e-7 to 1.6e-7, RFA
# 1.0e-7 to 1.7e-7, Performer 4.7e-7 to 1.0e-6 (its exp features amplify rounding)
@pytest.mark.parametrize("shape", SHAPES)
def test_linear_matches_the_papers_equations_written_here(shape):
    wl = workload(shape)
    inputs = make_inputs(wl, 2)
    r = simulate("linear", wl, GPU, inputs=inputs)
    paper = paper_output(wl, inputs, lambda x, b, h: elu_plus_one(x))
    assert rel_err(r.outputs["o"], paper) < EXACT_TOL


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", [{"seed": 4}, {"seed": 5, "features": 24, "sigma": 2.0}])
def test_rfa_matches_the_papers_equations_written_here(shape, options):
    wl = workload(shape)
    inputs = make_inputs(wl, 2)
    r = simulate("rfa", wl, GPU, inputs=inputs, options=options)
    plan = rfa.plan(wl, GPU, GPU.smem_bytes_per_block, **options)
    w = np.asarray(rfa.projection(plan, wl.head_dim, options["seed"]), np.float64)
    sigma = options.get("sigma", 1.0)
    paper = paper_output(wl, inputs, lambda x, b, h: fourier_features(x, w, sigma))
    assert rel_err(r.outputs["o"], paper) < EXACT_TOL


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", [{"seed": 4}, {"seed": 6, "features": 40, "redraw": "head"}])
def test_performer_matches_the_papers_equations_written_here(shape, options):
    wl = workload(shape)
    inputs = make_inputs(wl, 2)
    r = simulate("performer", wl, GPU, inputs=inputs, options=options)
    plan = performer.plan(wl, GPU, GPU.smem_bytes_per_block, **options)
    w_of = performer.projection_fn(plan, wl.head_dim, options["seed"])
    paper = paper_output(wl, inputs, lambda x, b, h: positive_features(
        x, np.asarray(w_of(b, h), np.float64), wl.scale))
    assert rel_err(r.outputs["o"], paper) < EXACT_TOL


def test_orthogonal_features_are_marginally_gaussian():
    """FAVOR+ is unbiased only if every row of W is marginally N(0, I_d) (Lemma 1; the
    orthogonal blocks of §2.4 must be Haar-random). Each row position of a block, averaged
    over 4000 draws, must have mean 0 and unit second moment within 5 standard errors — a
    QR without the sign fix leans the first row to −e_1 (mean −0.8 in coordinate 0)."""
    d, draws = 16, 4000
    rows = performer.orthogonal_gaussian(d * draws, d, np.random.default_rng(0))
    rows = rows.astype(np.float64).reshape(draws, d, d)                # (draw, row, coordinate)
    assert np.abs(rows.mean(axis=0)).max() < 5 / np.sqrt(draws)
    assert np.abs((rows ** 2).mean(axis=0) - 1).max() < 5 * np.sqrt(2 / draws)
    block = rows[0]
    assert np.allclose(block @ block.T * (1 - np.eye(d)), 0, atol=1e-4)   # orthogonal rows


def test_random_features_converge_to_the_softmax_each_paper_names():
    """The kernels each feature map estimates: with many features the module's output
    approaches softmax(q̂·k̂/σ²) V (RFA) and softmax(scale q·k) V (Performer), and the error
    falls about as 1/√m (Monte Carlo). Inputs of magnitude 0.5 keep FAVOR+'s variance,
    which grows as exp(|x + y|²), small enough to see it at m = 16384."""
    wl = Workload(batch=1, heads=1, seq_q=64, head_dim=16, causal=True)
    inputs = make_inputs(wl, 9, magnitude=0.5)
    q, k = (np.asarray(x, np.float64) for x in (inputs.q, inputs.k))
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)    # noqa: E731
    sigma = 0.8
    targets = {
        "rfa": attention_reference(unit(q), unit(k), inputs.v, causal=True, scale=sigma ** -2)[0],
        "performer": attention_reference(q, k, inputs.v, causal=True, scale=wl.scale)[0],
    }
    for name, target in targets.items():
        extra = {"sigma": sigma} if name == "rfa" else {}
        errors = [rel_err(simulate(name, wl, GPU, inputs=inputs,
                                   options={"features": m, "seed": 1, **extra}).outputs["o"],
                          target) for m in (16, 16384)]
        assert errors[1] < 0.025 and errors[1] < errors[0] / 8, (name, errors)
