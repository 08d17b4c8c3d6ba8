"""CLI commands kept in their own modules; each has ``register(app)`` adding it to the typer app."""
