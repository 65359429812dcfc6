"""Build script for openmm-backmap.

Metadata and dependencies live in pyproject.toml; this file exists so that the native
OpenMM plugin (plugin/, CMakeLists.txt) can be built by the same `pip install .`.
"""

from setuptools import setup

setup()
