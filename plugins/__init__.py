"""Built-in opcode plugins; each module is registered through the `opcode` entry-point group."""
