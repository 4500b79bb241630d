"""A test node that declares resources, as a training node does (``resources = {"GPU": 1}``)."""

from nodeflow.node import Node, Port
from tests.nodepack import NUMBER


class GpuAdd(Node):
    type = "test.gpu_add"
    title = "Add on a GPU worker"
    category = "Test"
    inputs = (Port("a", NUMBER),)
    outputs = (Port("value", NUMBER),)
    resources = {"GPU": 1}

    def run(self, ctx, params, a):
        return {"value": a + 1}
