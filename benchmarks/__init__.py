"""Benchmarks: scripts that print numbers (issue 12). Nothing here is a test and nothing here
asserts a time; ``make bench`` runs them all and writes docs/performance.{md,json,png}."""
