"""Datasets: the PIE-Bench folder, PIE_Bench_pp, the smoke set and ShapesEdit. Imports only pie_bench.core."""
