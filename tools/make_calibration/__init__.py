"""Generator of the synthetic INT8 calibration set and held-out set (``calibration/{calib,heldout}``).

Why this exists: INT8 Q/DQ scales are only as good as the activations they were calibrated on.
AutoGLM-Phone-9B sees phone screenshots plus agent instructions in Chinese and English, so the data
has to look like that: portrait phone screens full of UI text, a few natural photos, instructions
in both languages. A separate held-out split, never used for calibration, measures what INT8 costs.

The synthetic set is a deterministic CI fixture: flat drawn screens have other activation
statistics than real screenshots. Production calibration uses real screenshots imported with
``autoglm-trt calib-import`` (see calibration/README.md).

Layout: ``screens.yaml`` (which screens, their texts and photo splits), ``prompts.jsonl`` (the
instructions per screen, per photo and text-only), ``ui.yaml`` (shared UI vocabulary); ``spec``
reads them, ``screens/`` holds one renderer per app type on the ``canvas`` drawing context with
``chrome`` and ``glyphs``, ``generate`` writes and checks both splits, ``cli`` is the entry point.

Usage::

    python -m tools.make_calibration                # rewrite calibration/{calib,heldout}
    python -m tools.make_calibration --out /tmp/c   # write elsewhere (e.g. to diff)
    python -m tools.make_calibration --latin-only   # force the no-CJK-font fallback
    python -m tools.make_calibration --builtin-font # force PIL's built-in font (no font files)
"""
