"""Shared fixtures: the real control plane, PostgreSQL and the stand-in cloud."""

pytest_plugins = [
    "tests.fixtures.kube",
    "tests.fixtures.postgres",
    "tests.fixtures.cloud",
]
