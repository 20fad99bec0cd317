"""Operators of the cache pipeline, split by AWS resource like the Amazon provider."""
