"""How a run is evaluated: Pass@k on the benchmarks (evaluator), evaluation noise and seed statistics
(significance), and a run's verdict against its baseline (verdict)."""
