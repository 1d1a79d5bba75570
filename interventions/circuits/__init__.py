"""Localization against known circuits: benchmarks whose truth is known (tracr-compiled
programs, a planted circuit), their ablation checks, and the scores that rank a method's map
against the truth (docs/circuits.md; the math in docs/method.md §13)."""
