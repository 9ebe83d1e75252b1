"""Built-in expression engines, one plugin each."""
