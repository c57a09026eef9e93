"""The run layer: runner, per-sample results, leaderboard, run folder, lock, distributed. Imports core, editors, metrics, datasets."""
