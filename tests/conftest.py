"""Shared fixtures: the real control plane, PostgreSQL and the stand-in cloud."""

pytest_plugins = [
    "tests.fixtures.kube",
    "tests.fixtures.postgres",
    "tests.fixtures.cloud",
]


def pytest_collection_modifyitems(items: list) -> None:  # type: ignore[type-arg]
    """The secret scan looks at what every other test left behind: it runs last."""
    last = [i for i in items if "test_secret_scan.py" in i.nodeid]
    items[:] = [i for i in items if i not in last] + last
