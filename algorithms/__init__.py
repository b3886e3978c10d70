"""The programs: one module per attention algorithm, run through the simulated hierarchy.

Every module at this level is a registered algorithm (``algorithms.registry``) offering the
same entry points (``algorithms.base``); tests and the CLI loop over the registry.
``standard``, ``flash1`` and ``flash2`` are packages because they also have a backward pass:
the forward (and the registered contract) is the package itself, the backward is its
``backward`` module. ``kernels/`` holds the counted building blocks the algorithms share,
``ports/`` the CUDA ports' launch declarations and ``cuda/`` their sources.
"""
