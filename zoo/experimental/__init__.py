"""Experimental operators: accurate, not wired into any layer, kept apart from the production kernels."""
