import pytest

from nodeflow.node import Registry
from tests import nodepack


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.add_module(nodepack, source="test pack")
    return reg
