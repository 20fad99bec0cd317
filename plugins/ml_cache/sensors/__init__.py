"""Waits that poke in reschedule mode: each poke is a short worker slot, nothing is held between them."""
