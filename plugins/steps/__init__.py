"""Built-in step types, one plugin each."""
