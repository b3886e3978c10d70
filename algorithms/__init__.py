"""The programs: one module per attention algorithm, run through the simulated hierarchy.

Every module offers the same entry points (see ``algorithms.base``) and is listed once in
``algorithms.registry``; tests and the CLI loop over the registry.
"""
