"""Front ends: turn a model file or object into a NIR graph."""
