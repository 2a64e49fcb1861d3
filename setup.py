"""Package layout (metadata and dependencies are in setup.cfg).

The YAML configs live in the repository's top-level ``configs/`` folder and are installed as the
package ``zoo.configs`` (package data, read through ``importlib.resources``), so a plain
``pip install`` of the wheel finds them as an editable install does.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["zoo", "zoo.*", "registry", "registry.*"]) + ["zoo.configs"],
    package_dir={"zoo.configs": "configs"},
    package_data={"zoo.configs": ["*/*.yaml"]},
)
