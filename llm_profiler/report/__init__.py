"""Rendering: seed-style lines, per-layer tables (text / Markdown / CSV)."""
