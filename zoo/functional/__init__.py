"""Pure functions (no nn.Module state). Each operator keeps a materialised reference that is its definition."""
