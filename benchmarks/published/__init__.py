"""The timing model against published FlashAttention figures: what writes docs/validation.md.

benchmarks/validate_published.py is the command line; this package is the rest, one module a
concern, each importing only those above it:

- ``predictions``: the papers' benchmark shapes, the GPUs of the page (built-in, or measured
  with ``--measured``: the package's one piece of state) and the predicted times and TFLOP/s.
- ``targets``: the targets the model is held to and the band the README documents.
- ``sources``: every source cited, with the words it was read from.
- ``figures``: the primary published figures, each a ``Comparison`` with its prediction.
- ``charts``: the published bar charts, bar by bar against the predicted bars.
- ``scorecard``: every point at once, by group, outside the band, against the targets.
- ``model_tables``: the model's constants with their sources, the ablation, the breakdown.
- ``diagnostics``, ``fa3_diagnostics``: the what-ifs and ranges the prose quotes.
- ``gaps``: the prose of "Where the model is still off", one function per bullet.
- ``document``: the page, one function per section.
- ``summary``: reports/validation_summary.json, the points' ranges that the report quotes.
- ``readme``: the README's block of the page's targets and groups, between its markers.

The scripts put benchmarks/ on ``sys.path`` (Python does for the script it runs; the tests'
``_benchmarks.py`` does for them), so the package is imported as ``published``; importing it
under another name as well would give ``use_measured`` a second copy of the state.
"""
