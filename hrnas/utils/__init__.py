"""Shared plumbing every layer may use: distributed helpers, progress bars, atomic writes, EMA, threads."""
