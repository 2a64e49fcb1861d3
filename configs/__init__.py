"""The shipped YAML configs (layers, tasks, experiments, comparisons), installed as package data ``zoo.configs``."""
