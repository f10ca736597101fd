"""Metrics on score tensors; no engine or data imports, so they are easy to test and reuse."""
