"""Offline generators of LRA tasks in the official layouts (ListOps; Pathfinder / Path-X)."""
