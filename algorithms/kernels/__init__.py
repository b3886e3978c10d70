"""The counted building blocks the algorithms share.

Nothing here is registered or run on its own: each module is a piece that several
algorithm modules (one level up) compose, and every byte and FLOP it moves goes through
the counted primitives of ``hwmodels.primitives``.

* ``common``            plan helpers, head iteration, causal-mask geometry, the online softmax
* ``flash_tile``        FlashAttention-2's inner tile step (flash2, ring, the sparse family)
* ``block_sparse_exec`` the CSR tile-list kernel behind local, sparse_transformer, longformer,
                        bigbird, block_sparse and nsa's window
* ``sparse_patterns``   the patterns themselves, as element masks and block layouts
* ``sparse_blocked``    the Sparse Transformer's blocked layouts (residue-ordered strided keys,
                        gathered fixed summary keys) and their merging kernel
* ``splitkv``           packed-group split-KV attention and its combine (gqa, mla, nsa)
* ``gemm``              cuBLAS-like tiled GEMMs (standard attention, mla's projections)
* ``feature_kernels``, ``feature_attention``  the linear-attention family's state/apply kernels
* ``feature_gate``      RFA's recency gate on the causal sweep
* ``nsa_kernels``       NSA's compression, compressed attention and top-n selection
* ``nsa_decode``, ``nsa_decode_split``  NSA's decode step with its compressed cache (fused
                        and split schedules)
* ``feature_decode``    recurrent decoding of the linear-attention family (its state per KV head)
* ``radix_sort``        the LSD radix sort of Reformer's bucket ids
* ``dropout``           the counter-based keep mask shared by every dropout pass and port
* ``fp8``               e4m3 rounding, block scales and the Hadamard rotation (flash3's FP8)
* ``passes``            forward / backward / fwd+bwd composition for training workloads
* ``decode_info``       KV-cache sizes and per-token decode timing for decode workloads
* ``footprints``        HBM allocations shared by the algorithms' ``footprint`` declarations
* ``step_latency``      what a tile step waits for beyond its pipes' busy time (every softmax
                        tile loop's ``step_events``, pricing only)
"""
