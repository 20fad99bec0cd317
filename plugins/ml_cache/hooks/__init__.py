"""Thin AWS hooks: one AWS call a method, custom JSON waiters beside the provider's."""
