"""A plugin that fails at import on purpose."""
