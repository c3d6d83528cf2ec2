"""Tests of the repository's files outside the package: docs, README, examples, workflows, lock, benchmarks."""
