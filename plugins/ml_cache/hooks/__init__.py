"""Thin AWS hooks: one AWS operation a method (paginated where AWS pages), our JSON waiters on top of the provider's."""
