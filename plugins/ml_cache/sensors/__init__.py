"""Waits that poke: each poke is stateless, judged from what the cluster holds (see validation.py for the mode)."""
