"""The opcode server: Starlette app (MCP transports, health) and the click CLI."""
