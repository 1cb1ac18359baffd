"""Benchmarks of the operator service, with the physical references measured beside them."""
