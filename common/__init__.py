"""Shared code of the operator functions: one module per concern (see the design notes)."""
