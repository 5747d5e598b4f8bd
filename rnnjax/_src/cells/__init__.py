"""The built-in cells: each a factory returning a `Cell` NamedTuple of pure functions."""
