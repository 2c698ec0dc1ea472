"""Dataset export: plan (pure), journal and manifest (pure), writer (files), ``worldmill export`` (CLI)."""
