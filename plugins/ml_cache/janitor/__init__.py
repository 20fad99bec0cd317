"""The janitor: what exists (inventory), what to do about it (plan, pure), doing it (actions), the report."""
