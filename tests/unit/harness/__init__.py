"""Tests of the test suite's own tools: the canary checker and the reports gathered from xdist workers."""
