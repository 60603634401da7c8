"""The suites shipped with the harness (YAML files beside this one).

This folder is installed as a package so that ``pip install .`` ships them: ``harness suites``
lists them and ``harness run NAME`` runs one by its bare name (:mod:`harness.suite.catalog`).
"""
